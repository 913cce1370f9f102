"""Strategy partial's frozen-layer cache: cached outputs equal the plain forward, hits on reuse,
keys follow what the states depend on, damaged shards are rebuilt, training goes through it."""

from __future__ import annotations

import copy

import pytest
import torch

from tunewise.models import layer_cache
from tunewise.models.layer_cache import frozen_layer_cache

from tiny_models import build_tiny_st_model

TEXTS = ["what is a permit", "roof", "how long does it take to build a new garage for my house please tell me",
         "fence rules", "the balcony heating and drainage of the attic"]


@pytest.fixture(scope="module")
def st3(tmp_path_factory):
    from sentence_transformers import SentenceTransformer

    path = build_tiny_st_model(tmp_path_factory.mktemp("st3") / "m", layers=3)
    return SentenceTransformer(str(path), device="cpu")


@pytest.fixture(autouse=True)
def _fresh_memory():
    layer_cache._SHARED.clear()
    yield
    layer_cache._SHARED.clear()


def _cache(model, n=2, **kw):
    return frozen_layer_cache(model[0].model, n, max_length=model.max_seq_length, **kw)


@pytest.mark.parametrize("storage, tol", [(torch.float32, 1e-6), (torch.float16, 5e-3)])
def test_cached_encode_equals_plain_forward(st3, storage, tol):
    plain = st3.encode(TEXTS, convert_to_tensor=True, batch_size=2)
    cache = _cache(st3, storage=storage)
    with cache.active():
        first = st3.encode(TEXTS, convert_to_tensor=True, batch_size=2)  # computes and stores
        second = st3.encode(TEXTS, convert_to_tensor=True, batch_size=3)  # reads, other padding
    assert (cache.misses, cache.hits) == (len(TEXTS), len(TEXTS))
    assert torch.allclose(first, plain, atol=tol) and torch.allclose(second, plain, atol=tol)
    backbone = st3[0].model  # the patch is gone after the block: the saved model is the plain one
    assert "forward" not in backbone.__dict__ and "forward" not in backbone.embeddings.__dict__


def test_second_use_reads_the_disk_cache(st3):
    with _cache(st3).active():
        st3.encode(TEXTS)
    layer_cache._SHARED.clear()  # a new process: only the shards remain
    cache = _cache(st3)
    assert len(cache.rows) == len(TEXTS) and cache.disk_bytes() > 0
    with cache.active():
        st3.encode(TEXTS)
    assert (cache.hits, cache.misses) == (len(TEXTS), 0)


def test_key_changes_with_layers_length_precision_and_weights(st3):
    base = _cache(st3).key
    assert _cache(st3, n=1).key != base
    assert frozen_layer_cache(st3[0].model, 2, max_length=16).key != base
    assert _cache(st3, precision="bf16").key != base
    assert _cache(st3, storage=torch.float32).key != base
    other = copy.deepcopy(st3)
    with torch.no_grad():
        other[0].model.embeddings.word_embeddings.weight.add_(0.01)
    assert _cache(other).key != base
    top_changed = copy.deepcopy(st3)
    with torch.no_grad():  # a trainable (upper) layer does not change what the frozen part outputs
        top_changed[0].model.encoder.layer[2].output.dense.weight.add_(0.01)
    assert _cache(top_changed).key == base


def test_damaged_shard_is_dropped_and_recomputed(st3):
    cache = _cache(st3)
    with cache.active():
        st3.encode(TEXTS)
    (shard,) = cache.path.glob("seq-*.safetensors")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    layer_cache._SHARED.clear()
    again = _cache(st3)
    assert again.rows == {} and any("checksum" in p or "unreadable" in p for p in again.problems)
    with again.active():
        st3.encode(TEXTS)
    assert again.misses == len(TEXTS)


def test_unsupported_inputs_and_models_fall_back(st3, tiny_llama):
    from transformers import AutoModelForCausalLM

    assert frozen_layer_cache(AutoModelForCausalLM.from_pretrained(tiny_llama).model, 1) is None
    assert _cache(st3, n=0) is None
    backbone = st3[0].model
    cache = _cache(st3)
    ids = torch.tensor([[0, 0, 2, 7, 3], [2, 8, 9, 10, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding: not cached
    with torch.no_grad():
        plain = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        with cache.active():
            cached = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    assert cache.misses == cache.hits == 0 and torch.equal(plain, cached)


def test_classifier_view_gives_the_same_logits(tiny_bert):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tunewise.strategies.partial_cache import CachedLayersView

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(tiny_bert), config=BertConfig.from_pretrained(str(tiny_bert), num_labels=3)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    batch = tok(["w1 w2 w3", "w4", "w5 w6 w7 w8 w9"], padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**batch).logits
        view = CachedLayersView(model, frozen_layer_cache(model.bert, 1, storage=torch.float32))
        first, second = view(**batch).logits, view(**batch).logits
    assert view.layer_cache.hits == 3 and torch.allclose(first, plain, atol=1e-6) and torch.allclose(second, plain, atol=1e-6)
    assert view.config is model.config  # the view is the model for everything else


def test_training_through_the_cache_updates_only_upper_layers(st3):
    """A few MNRL steps with the frozen part read from the cache: the loss falls, the upper layers
    move, the frozen ones do not, and the saved model needs no cache."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = copy.deepcopy(st3)
    backbone = model[0].model
    for name, p in backbone.named_parameters():
        p.requires_grad_(not (name.startswith("embeddings") or name.startswith("encoder.layer.0") or name.startswith("encoder.layer.1")))
    frozen_before = backbone.encoder.layer[1].output.dense.weight.clone()
    top_before = backbone.encoder.layer[2].output.dense.weight.clone()
    loss_fn = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    anchors, positives = TEXTS, [t + " info" for t in TEXTS]
    cache = _cache(model)
    losses = []
    model.train()
    with cache.active():
        for _ in range(6):
            features = [model.preprocess(anchors), model.preprocess(positives)]
            loss = loss_fn(features, None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert cache.hits + cache.misses == 6 * 2 * len(TEXTS) and cache.misses <= 2 * len(TEXTS)
    assert torch.equal(backbone.encoder.layer[1].output.dense.weight, frozen_before)
    assert not torch.equal(backbone.encoder.layer[2].output.dense.weight, top_before)


@pytest.mark.slow  # a whole fit and an evaluation: minutes on a loaded 2-core machine
def test_partial_fit_reads_the_cache_and_saves_a_plain_model(tiny_st_model, pairs_file, tmp_path):
    """A partial fit with the cache: shards are written, and the "after" metrics (cached path)
    equal a plain evaluation of the saved SentenceTransformer."""
    from rich.console import Console

    import tunewise
    from tunewise.models.feature_cache import cache_root

    config = {"model": tiny_st_model, "output_dir": str(tmp_path / "run"), "data": {"train": str(pairs_file)},
              "train": {"epochs": 1, "batch_size": 8, "precision": "fp32"}, "eval": {"k": [1, 10]},
              "strategy": {"name": "partial", "frozen_layers": 1}}
    r = tunewise.fit(config, console=Console(quiet=True))
    assert list(cache_root().glob("*/seq-*.safetensors"))
    plain = tunewise.evaluate({**config, "output_dir": str(tmp_path / "eval")}, model=str(r.output_dir),
                              console=Console(quiet=True))
    for name, value in r.metrics["after"].items():
        assert plain["metrics"][name] == pytest.approx(value, abs=0.02), name


def test_cache_under_bf16_autocast_matches_the_autocast_forward(st3):
    """Evaluation runs under the run's bf16 autocast: the cache computes, stores (fp16) and reads there."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = st3.encode(TEXTS, convert_to_tensor=True).float()
        cache = _cache(st3, precision="bf16")
        with cache.active():
            first = st3.encode(TEXTS, convert_to_tensor=True).float()
        with cache.active():
            second = st3.encode(TEXTS, convert_to_tensor=True).float()
    assert cache.hits == len(TEXTS) and list(cache.path.glob("seq-*.safetensors"))
    assert torch.allclose(first, plain, atol=0.05) and torch.allclose(second, first)


def test_nested_activation_keeps_the_outer_patch(st3):
    """An evaluation inside training (a second cache object on the same model) leaves training's patch on."""
    outer, inner = _cache(st3), _cache(st3)
    backbone = st3[0].model
    with outer.active():
        with inner.active():
            st3.encode(TEXTS)
        assert "forward" in backbone.__dict__
        st3.encode(TEXTS)
    assert "forward" not in backbone.__dict__ and outer.hits + outer.misses == 2 * len(TEXTS)
