"""Rendering notifications: a plain-text line and Slack Block Kit blocks.

A message is rendered once, when it is queued, and stored in the outbox as
JSON, so a retry sends exactly what the first attempt would have sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["render", "KINDS", "ICONS", "shown_value"]

#: Message kinds: an incident opens, changes (an alert joins or recovers), is reminded of, resolves.
KINDS = ("firing", "update", "reminder", "resolved", "test")

_ICON = {"firing": ":red_circle:", "update": ":large_orange_circle:", "reminder": ":bell:",
         "resolved": ":large_green_circle:", "test": ":white_check_mark:"}
#: The icon shortcodes a message's text starts with (the console notifier takes them off).
ICONS: tuple[str, ...] = tuple(_ICON.values())
_WORD = {"firing": "FIRING", "update": "UPDATE", "reminder": "STILL FIRING", "resolved": "RESOLVED", "test": "TEST"}
_MAX_MEMBERS = 8


#: Rules whose figure breaches by falling under its threshold (the others breach by rising over it).
_LOWER_IS_WORSE = frozenset({"cache_hit_rate_drop", "routing_tier_match_drop"})


def _excess(member: Mapping[str, Any]) -> float:
    """How far past its threshold a member's figure is, bigger is worse: the observation's ``excess``, else read off
    its ``value`` and ``threshold`` (relative to the threshold, for the rules that rise); -inf when it says
    neither (it sorts last)."""
    obs = member.get("observation") or {}
    try:
        if obs.get("excess") is not None:
            x = float(obs["excess"])
        else:
            value, threshold = float(obs["value"]), float(obs["threshold"])
            if obs.get("rule") in _LOWER_IS_WORSE:
                x = threshold - value
            else:
                x = (value - threshold) / abs(threshold) if threshold else value - threshold
    except (KeyError, TypeError, ValueError):
        return float("-inf")
    return x if x == x else float("-inf")


def _worst_first(members: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Firing members before recovered ones, each the furthest past its threshold first (ties: by labels), so the
    :data:`_MAX_MEMBERS` a message shows are the worst."""
    return sorted(members, key=lambda m: (m.get("state") in ("resolved", "inactive"), -_excess(m),
                                          _labels_text(m.get("labels") or {})))


#: What Slack's mrkdwn reads as formatting in a value: ``*``, ``~`` or a backtick anywhere, ``_`` where it can open or
#: close italics (at either end of a word: ``_it_``, not the ``_`` of ``org_42_prod``).
_MARKUP = re.compile(r"[*~`]|(?<![^\W_])_|_(?![^\W_])")
#: Stands for a backtick inside a value shown as inline code (which cannot hold one): U+02CB MODIFIER LETTER GRAVE
#: ACCENT.
_BACKTICK_STANDIN = "\u02cb"


def shown_value(value: object) -> str:
    """A value from data (a tenant, tier, subtype, task type, slice: already its label, see
    :func:`costline.alerts.rules.label_value`) as a message shows it: as it is, or — when Slack's mrkdwn would read
    characters of it as formatting (``*bold*``, ``_it_``, ``~st~``, a backtick) — between backticks, as inline
    code, with any backtick in it shown as ``ˋ`` (U+02CB): the name reads and copies as written and toggles no
    formatting of the line around it. Every data value in a summary, a figure, a title or a member header goes
    through this."""
    text = str(value)
    if not _MARKUP.search(text):
        return text
    return "`" + text.replace("`", _BACKTICK_STANDIN) + "`"


def _labels_text(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={shown_value(v)}" for k, v in sorted(labels.items())) or "-"


def _title(kind: str, rule: str, group_labels: Mapping[str, str], severity: str) -> str:
    shown = {k: v for k, v in group_labels.items() if k != "rule"}
    where = f" ({_labels_text(shown)})" if shown else ""
    return f"{_WORD[kind]} [{severity}] {rule}{where}"[:150]


def _member_blocks(member: Mapping[str, Any], *, state_word: str | None = None) -> list[dict[str, Any]]:
    obs = member.get("observation") or {}
    labels = member.get("labels") or {}
    head = f"*{_labels_text(labels)}*" + (f" — {state_word}" if state_word else "")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"{head}\n{obs.get('summary', '')}"}},
    ]
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in list((obs.get("figures") or {}).items())[:9]]
    if obs.get("window"):
        fields.append({"type": "mrkdwn", "text": f"*window*\n{obs['window']}"})
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    return blocks


def _dig_in(query: str) -> str:
    """The "Dig in" section: the query in a code block, to copy into ``costline sql``. The rules write the values
    in it that would not survive Slack (characters that do not print, backticks) as ``chr()`` calls, so the block
    is the query as it runs. A query that would not fit a section once escaped for Slack (a series named with
    thousands of characters) is left out with a note: a query cut short would not run, or select other rows."""
    from costline.alerts.notify import SECTION_MAX, slack_escape

    text = f"*Dig in* (`costline sql`):\n```{query}```"
    if len(slack_escape(text)) <= SECTION_MAX:
        return text
    return (f"*Dig in*: the query is left out, {len(query):,} characters are too long for a Slack message "
            "(a name in it is that long); the rule's view is in docs/alerts.md, query it with `costline sql`.")


def render(
    kind: str,
    *,
    rule: str,
    group_labels: Mapping[str, str],
    severity: str,
    incident: int,
    members: Sequence[Mapping[str, Any]],
    at: datetime,
    note: str = "",
) -> dict[str, Any]:
    """``{"kind", "title", "text", "blocks"}`` for one notification.

    ``members`` are alert dicts (``labels``, ``state``, ``observation`` with
    ``summary``, ``figures``, ``window``, ``query``).
    """
    title = _title(kind, rule, group_labels, severity)
    members = _worst_first(members)
    lines = [f"{_ICON[kind]} {title}"]
    if note:
        lines.append(note)
    for m in members[:_MAX_MEMBERS]:
        obs = m.get("observation") or {}
        lines.append(f"• {_labels_text(m.get('labels') or {})}: {obs.get('summary', '')}")
    if len(members) > _MAX_MEMBERS:
        lines.append(f"… and {len(members) - _MAX_MEMBERS} more")
    text = "\n".join(lines)

    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    if note:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": note}})
    for m in members[:_MAX_MEMBERS]:
        word = None
        if kind in ("update", "resolved"):
            word = "resolved" if m.get("state") in ("resolved", "inactive") else "firing"
            if word == "resolved" and (m.get("observation") or {}).get("no_data"):
                word = "closed for lack of data"
        blocks.extend(_member_blocks(m, state_word=word))
    if len(members) > _MAX_MEMBERS:
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"… and {len(members) - _MAX_MEMBERS} more: `costline alerts list`"}]})
    query = next(((m.get("observation") or {}).get("query") for m in members if (m.get("observation") or {}).get("query")), "")
    if query and kind in ("firing", "reminder"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _dig_in(str(query))}})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
        f"{at:%Y-%m-%d %H:%M:%S} UTC · incident #{incident} · severity {severity} · "
        f"silence: `costline alerts silence {rule} --for 2h --reason ...`")}]})
    return {"kind": kind, "title": title, "text": text, "blocks": blocks}
