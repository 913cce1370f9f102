"""Strategies: registry, option validation, layer discovery, freezing, learning-rate groups, unfreezing, LoRA."""

from __future__ import annotations

import pytest
import torch

from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.strategies import STRATEGIES, resolve_strategy
from tunewise.strategies.layers import find_blocks, layer_map, n_frozen_layers
from tunewise.tasks import TASKS


def _cfg(model, strategy, **values):
    return load_config(None, values={"model": model, "strategy": strategy, **values})


def _prepared(model_path, strategy):
    cfg = _cfg(model_path, strategy)
    strat, options = resolve_strategy(cfg)
    task = TASKS.get("embedding")()
    model = strat.prepare(task.load_model(cfg, "cpu"), task, options, cfg)
    return model, task, strat, options, cfg


# ----------------------------------------------------------------------------- registry and options


def test_registry_holds_every_strategy_by_the_name_users_type():
    assert {"head", "partial", "full", "lora", "qlora"} <= set(STRATEGIES.names())


def test_unknown_strategy_suggests_the_closest():
    with pytest.raises(TunewiseError, match=r"unknown strategy 'lroa' \(did you mean 'lora'\?\)"):
        resolve_strategy(_cfg(None, {"name": "lroa"}))


def test_option_of_another_strategy_says_where_it_applies():
    with pytest.raises(TunewiseError, match=r"strategy.layer_decay: does not apply to strategy 'head'.*full, lora, partial"):
        resolve_strategy(_cfg(None, {"name": "head", "layer_decay": 0.9}))


def test_unknown_option_suggests_the_closest():
    with pytest.raises(TunewiseError, match=r"strategy.rnak.*did you mean 'rank'"):
        resolve_strategy(_cfg(None, {"name": "lora", "rnak": 4}))


@pytest.mark.parametrize("strategy, message", [
    ({"name": "full", "layer_decay": 1.5}, "strategy.layer_decay: must be in \\(0, 1\\]"),
    ({"name": "partial", "frozen_layers": 1, "frozen_fraction": 0.5}, "give one of them"),
    ({"name": "partial", "frozen_fraction": 2.0}, "strategy.frozen_fraction"),
    ({"name": "lora", "rank": 0}, "strategy.rank: must be at least 1"),
    ({"name": "lora", "dropout": 1.0}, "strategy.dropout"),
    ({"name": "full", "interpolate": [0, 1.5]}, "strategy.interpolate: alpha must be in \\[0, 1\\]"),
    ({"name": "full", "unfreeze_unit": "steps"}, "strategy.unfreeze_unit: set strategy.unfreeze_every"),
    ({"name": "lora", "merge": False, "interpolate": [0.5]}, "strategy.interpolate: needs strategy.merge: true"),
])
def test_bad_options_are_one_line_errors_naming_the_option(strategy, message):
    with pytest.raises(TunewiseError, match=message) as err:
        resolve_strategy(_cfg(None, strategy))
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- layer discovery


def _tiny(kind):
    import transformers as tf

    if kind == "bert":
        config = tf.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
        return tf.BertModel(config), "encoder.layer"
    if kind == "gpt2":
        return tf.GPT2Model(tf.GPT2Config(vocab_size=50, n_embd=16, n_layer=3, n_head=2, n_positions=32)), "h"
    if kind == "llama":
        return tf.LlamaModel(tf.LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                            num_key_value_heads=2, intermediate_size=32)), "layers"
    return tf.ViTModel(tf.ViTConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                                    image_size=8, patch_size=4)), ("encoder.layer", "layers")  # the name moved in transformers 5


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama", "vit"])
def test_find_blocks_is_architecture_generic(kind):
    model, expected = _tiny(kind)
    path, blocks = find_blocks(model)
    assert path in (expected if isinstance(expected, tuple) else (expected,)) and len(blocks) == 3
    lm = layer_map(model)
    assert lm.depth == 3
    assert lm.embeddings and all(lm.blocks)
    every = set(lm.embeddings) | set(lm.top) | {n for b in lm.blocks for n in b}
    assert every == {n for n, _ in model.named_parameters()}
    assert lm.depth_of(lm.embeddings[0]) == 0 and lm.depth_of(lm.blocks[2][0]) == 3


def test_model_without_blocks_is_a_clear_error():
    with pytest.raises(TunewiseError, match="cannot find the layer stack"):
        find_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_frozen_layers_larger_than_depth_is_an_error():
    assert n_frozen_layers(6, None, 0.5) == 3
    with pytest.raises(TunewiseError, match="strategy.frozen_layers: 9 is more than the model's 6 layers"):
        n_frozen_layers(6, 9, None)


# ----------------------------------------------------------------------------- partial, full, head_lr, layer decay


def test_partial_freezes_embeddings_and_bottom_layers(tiny_st_model):
    model, task, *_ = _prepared(tiny_st_model, {"name": "partial", "frozen_layers": 1})
    grads = {n: p.requires_grad for n, p in task.backbone(model).named_parameters()}
    assert not any(g for n, g in grads.items() if n.startswith("embeddings."))
    assert not any(g for n, g in grads.items() if n.startswith("encoder.layer.0."))
    assert all(g for n, g in grads.items() if n.startswith("encoder.layer.1."))


def test_partial_beyond_depth_fails_naming_the_option(tiny_st_model):
    with pytest.raises(TunewiseError, match="strategy.frozen_layers: 5 is more than the model's 2 layers"):
        _prepared(tiny_st_model, {"name": "partial", "frozen_layers": 5})


def test_head_lr_without_a_head_is_rejected(tiny_st_model):
    with pytest.raises(TunewiseError, match="strategy.head_lr: this model has no new head"):
        _prepared(tiny_st_model, {"name": "full", "head_lr": 1e-3})


def test_param_groups_apply_head_lr_and_layer_decay(tiny_st_model):
    model, task, strat, options, cfg = _prepared(
        tiny_st_model, {"name": "full", "head_dim": 16, "head_lr": 1e-3, "backbone_lr": 1e-4, "layer_decay": 0.5})
    groups = strat.param_groups(model, task, options, cfg)
    lrs = {g["name"]: g["lr"] for g in groups}
    # depth 2: layer id 0 = embeddings, 1..2 = blocks, 3 = top; lr = 1e-4 * 0.5 ** (3 - id)
    assert lrs["head"] == pytest.approx(1e-3)
    assert lrs["layer 3"] == pytest.approx(1e-4)
    assert lrs["layer 2"] == pytest.approx(5e-5)
    assert lrs["layer 1"] == pytest.approx(2.5e-5)
    assert lrs["layer 0"] == pytest.approx(1.25e-5)
    grouped = sum(p.numel() for g in groups for p in g["params"])
    assert grouped == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert {g["weight_decay"] for g in groups if g["name"] == "layer 0"} == {0.0, cfg.train.weight_decay}


def test_gradual_unfreezing_goes_from_the_top_one_group_per_epoch(tiny_st_model):
    from types import SimpleNamespace

    model, task, strat, options, cfg = _prepared(tiny_st_model, {"name": "full", "unfreeze_every": 1})
    (cb,) = strat.callbacks(model, task, options, cfg)
    backbone = task.backbone(model)
    state = SimpleNamespace(epoch=0.0, global_step=0)

    def trainable(prefix):
        return any(p.requires_grad for n, p in backbone.named_parameters() if n.startswith(prefix))

    cb.on_train_begin(None, state, None)
    assert trainable("encoder.layer.1.") and not trainable("encoder.layer.0.") and not trainable("embeddings.")
    state.epoch = 1.0
    cb.on_epoch_begin(None, state, None)
    assert trainable("encoder.layer.0.") and not trainable("embeddings.")
    state.epoch = 2.0
    cb.on_epoch_begin(None, state, None)
    assert trainable("embeddings.")
    assert [e["stage"] for e in cb.log] == [0, 1, 2]


def test_full_with_schedule_options_trains_and_reports_groups(tiny_st_model, pairs_file, tmp_path):
    from rich.console import Console

    import tunewise

    r = tunewise.fit({"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {"train": str(pairs_file)},
                      "train": {"epochs": 2, "batch_size": 8}, "eval": {"k": [1, 10]},
                      "strategy": {"name": "full", "layer_decay": 0.8, "unfreeze_every": 1}}, console=Console(quiet=True))
    s = r.metrics["strategy"]
    assert s["name"] == "full" and s["trainable_params"] == s["total_params"]
    assert {g["name"] for g in s["param_groups"]} >= {"layer 0", "layer 1", "layer 2"}
    assert [e["stage"] for e in s["unfreezing"]] == [0, 1]
    assert {"seconds", "samples_per_second"} <= set(r.metrics["train"]) and "peak_mib" in r.metrics["memory"]
    card = (r.output_dir / "README.md").read_text()
    assert "strategy `full`" in card and "trainable parameters" in card and "peak memory" in card


# ----------------------------------------------------------------------------- LoRA


def test_lora_target_that_does_not_exist_names_the_closest(tiny_st_model):
    with pytest.raises(TunewiseError, match=r"strategy.target_modules: 'qurey' is not a module of this model \(did you mean 'query'\?\)"):
        _prepared(tiny_st_model, {"name": "lora", "target_modules": ["qurey"]})


def test_lora_finds_targets_per_architecture_and_trains_only_adapters(tiny_st_model):
    from tunewise.strategies.lora import default_targets

    gpt2, _ = _tiny("gpt2")
    assert default_targets(gpt2) == ["c_attn"]
    model, task, *_ = _prepared(tiny_st_model, {"name": "lora", "rank": 2})
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any(".query." in n for n in trainable) and any(".value." in n for n in trainable)


def test_lora_run_saves_adapter_and_a_merged_model_that_loads_without_peft(tiny_st_model, pairs_file, tmp_path):
    import json

    from rich.console import Console
    from sentence_transformers import SentenceTransformer

    import tunewise
    from tunewise.strategies.lora import merge_run

    r = tunewise.fit({"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {"train": str(pairs_file)},
                      "train": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-3}, "eval": {"k": [1, 10]},
                      "strategy": {"name": "lora", "rank": 4, "alpha": 8}}, console=Console(quiet=True))
    out = r.output_dir
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "adapter" / "tunewise_adapter.json").read_text())["base_model"] == tiny_st_model
    merged = SentenceTransformer(str(out), device="cpu")
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    assert not (out / "adapter_config.json").exists()
    base = SentenceTransformer(tiny_st_model, device="cpu")
    texts = ["roof permit q1", "answer regarding roof details 1"]
    assert not torch.allclose(merged.encode(texts, convert_to_tensor=True), base.encode(texts, convert_to_tensor=True))
    # `tunewise merge` rebuilds the same merged model from base + adapter
    again = SentenceTransformer(str(merge_run(out, tmp_path / "merged")), device="cpu")
    torch.testing.assert_close(again.encode(texts, convert_to_tensor=True), merged.encode(texts, convert_to_tensor=True),
                               rtol=1e-4, atol=1e-5)
    assert r.metrics["strategy"]["trainable_fraction"] < 0.2
