"""Where the student runs: ``[distill] device`` is validated, ``auto`` follows torch, the adapter is merged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
sys.path.insert(0, str(Path(__file__).parent))

from costline.config import Config  # noqa: E402
from costline.distill.settings import DistillConfig  # noqa: E402
from costline.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("device, ok", [
    ("auto", True), ("cpu", True), ("cuda", True), ("cuda:1", True),
    ("gpu", False), ("cuda:", False), ("cuda:x", False), ("", False),
])
def test_device_key_is_validated(device, ok):
    from costline.distill import validate

    cfg = Config(distill=DistillConfig(device=device))
    if ok:
        validate(cfg)
    else:
        with pytest.raises(ConfigError, match=r"\[distill\] device"):
            validate(cfg)


def test_auto_picks_cuda_exactly_when_torch_sees_a_gpu():
    import torch

    from costline.distill.model import pick_device

    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == "cpu" and pick_device("cuda:3") == "cuda:3"


def test_merged_student_answers_as_the_unmerged_one_without_lora_layers(tmp_path):
    import torch
    from distill_world import tiny_base_model
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from costline.distill.model import generate, load_student

    texts = ["### Question:\nis it great\n### Answer:\npositive", "### Question:\nis it awful\n### Answer:\nnegative"]
    base = tiny_base_model(tmp_path / "base", texts)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():  # a non-trivial adapter: LoRA's B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(str(tmp_path / "adapter"))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp_path / "adapter"))

    tok, merged = load_student(base, tmp_path / "adapter", device="cpu")
    _, unmerged = load_student(base, tmp_path / "adapter", device="cpu", merge=False)
    assert not any("lora_" in k for k in merged.state_dict())
    assert any("lora_" in k for k in unmerged.state_dict())
    prompts = ["### Question:\nis it great\n### Answer:\n", "### Question:\nis it awful\n### Answer:\n"]
    assert generate(tok, merged, prompts, max_new_tokens=4) == generate(tok, unmerged, prompts, max_new_tokens=4)
