"""Shared by the pipeline tests: a tier that answers a fixed text, and a routing policy that sends everything to the
student (so a test picks which tiers answer and in what order they are tried)."""

from __future__ import annotations

from costline.serving.backends import Prompt, Reply
from costline.serving.routing.router import Decision


class ScriptedTier:
    """A tier that answers with a fixed text and keeps the prompts it was sent."""

    def __init__(self, spec, text: str) -> None:
        self.spec, self.text, self.prompts = spec, text, []

    def complete(self, prompt: Prompt) -> Reply:
        self.prompts.append(prompt)
        return Reply(self.text, self.spec.name, self.spec.model, "end_turn", 5, 5)

    def close(self) -> None:
        pass


class ToStudent:
    """A routing policy that sends everything to the student."""

    def route(self, query, task_type):
        return Decision("student", reason="fixed")
