"""``head``: frozen backbone, cached features (rebuilt when stale or corrupt), a head that loads with the model."""

from __future__ import annotations

import pytest
import torch
from rich.console import Console

import tunewise
from tunewise.models import feature_cache


def _fit(model, pairs, out, **strategy):
    return tunewise.fit({"model": model, "output_dir": str(out), "overwrite": True, "data": {"train": str(pairs)},
                         "train": {"epochs": 3, "batch_size": 8}, "eval": {"k": [1, 10]},
                         "strategy": {"name": "head", **strategy}}, console=Console(quiet=True))


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """A feature cache of this module's own: other tests may have cached the same tiny model and texts."""
    import os

    shared = os.environ["TUNEWISE_CACHE"]
    os.environ["TUNEWISE_CACHE"] = str(tmp_path_factory.mktemp("head-cache"))
    yield
    os.environ["TUNEWISE_CACHE"] = shared


@pytest.fixture(scope="module")
def head_runs(_own_cache, tiny_st_model, tmp_path_factory):
    import json

    from conftest import make_pairs

    tmp = tmp_path_factory.mktemp("head")
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in make_pairs()), encoding="utf-8")
    first = _fit(tiny_st_model, pairs, tmp / "a", dim=16)
    second = _fit(tiny_st_model, pairs, tmp / "b", dim=16)
    return first, second, pairs, tmp


def test_head_trains_only_the_head_and_loads_as_backbone_plus_head(head_runs, tiny_st_model):
    from sentence_transformers import SentenceTransformer

    first, *_ = head_runs
    s = first.metrics["strategy"]
    assert s["trainable_params"] == 32 * 16 + 16  # Dense(32 -> 16) weight + bias
    model = SentenceTransformer(str(first.output_dir), device="cpu")
    assert [type(m).__name__ for m in model][-2:] == ["Dense", "Normalize"]
    emb = model.encode(["roof permit"], convert_to_tensor=True)
    assert emb.shape == (1, 16) and torch.linalg.norm(emb).item() == pytest.approx(1.0, abs=1e-5)
    # the backbone did not move
    base = SentenceTransformer(tiny_st_model, device="cpu")
    torch.testing.assert_close(model[0].model.state_dict()["encoder.layer.0.output.dense.weight"],
                               base[0].model.state_dict()["encoder.layer.0.output.dense.weight"])


def test_second_run_hits_the_cache_and_later_epochs_skip_the_backbone(head_runs):
    first, second, *_ = head_runs
    c1, c2 = first.metrics["strategy"]["details"]["feature_cache"], second.metrics["strategy"]["details"]["feature_cache"]
    # the first run's "before" evaluation already cached the answers (they are the search corpus)
    assert c1["status"].startswith("partial") and 0 < c1["encoded"] < c1["texts"] and c2["status"] == "hit"
    assert c1["fingerprint"] == c2["fingerprint"]
    assert len(first.metrics["strategy"]["details"]["epoch_seconds"]) == 3


def test_head_loss_goes_down_and_runs_are_reproducible(head_runs):
    first, second, *_ = head_runs
    losses = first.metrics["strategy"]["details"]["epoch_losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert second.metrics["after"] == first.metrics["after"]  # seeded head init, same cached features


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:50]), "unreadable"),
    (lambda p: p.write_bytes(p.read_bytes()[:-8] + b"\x01" * 8), "checksum mismatch"),
])
def test_corrupted_cache_is_detected_and_rebuilt(head_runs, tiny_st_model, damage, reason):
    first, _, pairs, tmp = head_runs
    key = first.metrics["strategy"]["details"]["feature_cache"]["fingerprint"]
    shards = list((feature_cache.cache_root() / key).glob("shard-*.safetensors"))
    assert shards
    for shard in shards:
        damage(shard)
    probe = feature_cache.cached_features(key, ["a probe text, not in the data"], lambda todo: torch.zeros(len(todo), 32))
    assert probe.status.startswith("rebuilt") and reason in probe.status
    for shard in (feature_cache.cache_root() / key).glob("shard-*.safetensors"):  # damaged ones were dropped
        feature_cache._read_shard(key, shard)
    run = _fit(tiny_st_model, pairs, tmp / "c", dim=16)  # recomputes what the damaged shards held
    assert run.metrics["after"] == first.metrics["after"]
    again = _fit(tiny_st_model, pairs, tmp / "d", dim=16)
    assert again.metrics["strategy"]["details"]["feature_cache"]["status"] == "hit"


def test_stale_shard_under_the_wrong_key_is_not_used(tmp_path):
    shard = feature_cache.save("a" * 32, ["x", "y", "z"], torch.ones(3, 4))
    dst = feature_cache.cache_root() / ("b" * 32)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / shard.name).write_bytes(shard.read_bytes())
    assert feature_cache.load("b" * 32, ["x"]) == ({}, ["fingerprint mismatch (stale entry)"])
    assert not (dst / shard.name).exists()  # dropped, so it is recomputed once, not checked forever
    found, problems = feature_cache.load("a" * 32, ["x", "unknown"])
    assert list(found) == [feature_cache._text_hash("x")] and problems == []


def test_only_texts_never_seen_run_through_the_backbone(tmp_path):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return torch.tensor([[float(len(t)), 1.0] for t in texts])

    first = feature_cache.cached_features("c" * 32, ["aa", "b", "aa"], encode)
    assert first.status == "miss" and calls == [["aa", "b"]] and first.features[:, 0].tolist() == [2.0, 1.0, 2.0]
    second = feature_cache.cached_features("c" * 32, ["b", "cccc", "aa"], encode)
    assert second.status == "partial: 1 of 3 rows encoded" and calls[-1] == ["cccc"]
    assert second.features[:, 0].tolist() == [1.0, 4.0, 2.0]
    third = feature_cache.cached_features("c" * 32, ["cccc", "b"], encode)
    assert third.status == "hit" and len(calls) == 2 and third.encoded == 0


def test_head_evaluation_reads_the_body_from_the_cache_and_matches_the_model(tiny_st_model):
    from sentence_transformers import SentenceTransformer

    from tunewise.strategies.head.pooled_text import CachedHeadEncoder, body_and_head
    from tunewise.tasks.embedding import EmbeddingTask

    model = EmbeddingTask().add_head(SentenceTransformer(tiny_st_model, device="cpu"), 16)
    assert len(body_and_head(model)[1]) == 2  # Dense + Normalize come from the cache's side
    texts = ["roof permit", "a new text", "roof permit"]
    cached = CachedHeadEncoder(model)
    torch.testing.assert_close(cached.encode(texts, convert_to_tensor=True, normalize_embeddings=True),
                               model.encode(texts, convert_to_tensor=True, normalize_embeddings=True), atol=1e-5, rtol=1e-4)
    cached.encode(texts)
    assert cached.status[-1] == "hit"


def test_fingerprint_changes_with_weights_and_texts():
    lin = torch.nn.Linear(2, 2)
    w1 = feature_cache.weights_fingerprint(lin)
    with torch.no_grad():
        lin.weight[0, 0] += 1e-3
    assert feature_cache.weights_fingerprint(lin) != w1
    assert feature_cache.texts_fingerprint(["a", "b"]) != feature_cache.texts_fingerprint(["ab"])


def test_head_rejects_losses_it_cannot_train_on_features():
    from tunewise.config import load_config
    from tunewise.errors import TunewiseError
    from tunewise.strategies import resolve_strategy

    with pytest.raises(TunewiseError, match="train.loss: strategy head trains on cached features with mnrl"):
        resolve_strategy(load_config(None, values={"strategy": {"name": "head"}, "train.loss": "cosent"}))


def test_cache_off_reruns_the_backbone_every_epoch_and_learns_the_same(head_runs, tiny_st_model, monkeypatch):
    from tunewise.strategies.head import pooled_text as head

    first, _, pairs, tmp = head_runs
    calls = []
    original = head.encode_body
    monkeypatch.setattr(head, "encode_body", lambda model, texts, batch: (calls.append(len(texts)), original(model, texts, batch))[1])
    run = _fit(tiny_st_model, pairs, tmp / "off", dim=16, cache=False)
    c = run.metrics["strategy"]["details"]["feature_cache"]
    assert c["status"] == "off" and c["path"] is None
    assert len([n for n in calls if n == c["texts"]]) == 3  # epoch 1 builds, epochs 2 and 3 re-run the backbone
    assert run.metrics["after"] == pytest.approx(first.metrics["after"], abs=1e-4)
