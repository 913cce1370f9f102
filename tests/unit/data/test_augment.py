"""Text augmentation (data.augment): seeded, training text only, never empty, Swedish kept."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("nlpaug")

from rich.console import Console  # noqa: E402

from tunewise.config import load_config  # noqa: E402
from tunewise.data.augment import OPS, AugmentConfig, augment_labeled, augment_search_rows, augment_texts  # noqa: E402
from tunewise.errors import TunewiseError  # noqa: E402

SWEDISH = [
    "Hur lång tid tar det att få bygglov för en altan på tomten?",
    "Vad kostar ett äldre hus 🏠 med ödehus-känsla, och vilka åtgärder krävs?",
    "Måste grannarna höra av sig innan jag river förrådet på gården?",
]
ODD = ["", "ett", "två ord", "🙂", "  spaced   out  text  ", "ä", "a b"]
WORD_OPS = ["delete", "swap", "typo", "char"]


def rows(texts):
    return [{"anchor": t, "positive": f"svar {i}: {t[::-1]}"} for i, t in enumerate(texts)]


@pytest.mark.parametrize("op", WORD_OPS)
def test_seeded_and_deterministic(op):
    cfg = AugmentConfig(copies=2, ops=[op], p=0.3)
    first = augment_texts(SWEDISH, cfg, seed=1)
    assert first == augment_texts(SWEDISH, cfg, seed=1)
    assert first != augment_texts(SWEDISH, cfg, seed=2)
    assert first[0] != first[1]  # two copies are two different edits
    # a text's copies depend on the text, not on its neighbours: a budget subset gets the same copies
    assert augment_texts(SWEDISH[1:], cfg, seed=1)[0] == first[0][1:]


def test_global_random_state_is_left_alone():
    import random

    import numpy as np

    random.seed(5)
    np.random.seed(5)
    augment_texts(SWEDISH, AugmentConfig(copies=1, ops=WORD_OPS), seed=0)
    assert random.random() == random.Random(5).random()
    assert np.random.rand() == np.random.RandomState(5).rand()


@pytest.mark.parametrize("op", WORD_OPS)
def test_never_empty(op):
    cfg = AugmentConfig(copies=3, ops=[op], p=1.0)
    for version in augment_texts(ODD + SWEDISH, cfg, seed=0):
        for original, new in zip(ODD + SWEDISH, version):
            assert new.strip() or not original.strip()  # only an empty input stays empty
            if original.strip():
                assert new.strip()


def test_swedish_letters_and_emoji_kept():
    cfg = AugmentConfig(copies=4, ops=["delete", "swap"], p=0.3)
    for version in augment_texts(SWEDISH, cfg, seed=0):
        for original, new in zip(SWEDISH, version):
            # word ops move or drop whole white-space words: every word is one of the original's, intact
            # (nlpaug keeps the text sentence-cased: a word moved to the front gets a capital)
            assert {w.lower() for w in new.split()} <= {w.lower() for w in original.split()}
    cfg = AugmentConfig(copies=4, ops=["typo", "char"], p=0.3)
    for version in augment_texts(SWEDISH, cfg, seed=0):
        for original, new in zip(SWEDISH, version):
            old_words, new_words = original.split(), new.split()
            assert len(new_words) == len(old_words)  # letter edits never split, join or re-space words
            for a, b in zip(old_words, new_words):
                assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) <= 1
                for x, y in zip(a, b):
                    if x != y:  # only letters change; å/ä/ö, digits, punctuation and emoji stay
                        assert x.isalpha() and y.isascii() and y.isalpha() and x not in "åäöÅÄÖ"


def test_long_document_is_edited_by_share():
    doc = " ".join(f"ord{i}" for i in range(3000))
    (new,) = augment_texts([doc], AugmentConfig(copies=1, ops=["delete"], p=0.1), seed=0)[0:1]
    kept = len(new[0].split())
    assert 2600 <= kept <= 2800  # about 10% of 3,000 words deleted (nlpaug's default cap of 10 is off)


def test_copies_and_labels():
    texts, labels = SWEDISH * 2, [0, 1, 2, 0, 1, 2]
    out_texts, out_labels, report = augment_labeled(texts, labels, AugmentConfig(copies=2), seed=0)
    assert out_texts[:6] == texts and out_labels[:6] == labels  # originals first, untouched
    assert len(out_texts) == len(out_labels) == 6 + 2 * 6 == 6 + report["augmented"]
    assert report["ops"] == ["delete", "swap"] and report["augment_seconds"] >= 0
    by_text = dict(zip(texts, labels))
    for text, label in zip(out_texts[6:], out_labels[6:]):  # a copy keeps its item's label
        source = max(texts, key=lambda t: len(set(t.split()) & set(text.split())))
        assert by_text[source] == label
    # off: nothing added, no report
    assert augment_labeled(texts, labels, AugmentConfig(), seed=0) == (texts, labels, {})


def test_unchanged_copies_are_dropped():
    out, _, report = augment_labeled(["ett", "två ord här"], [0, 1], AugmentConfig(copies=1, ops=["delete"]), seed=0)
    assert out[:2] == ["ett", "två ord här"] and report["augmented"] == 1 and report["augment_unchanged"] == 1


def test_search_targets():
    base = rows(SWEDISH)
    out, report = augment_search_rows(base, AugmentConfig(copies=1), seed=0)
    assert out[:3] == base and len(out) == 6 and report["augmented"] == 3
    assert [r["positive"] for r in out[3:]] == [r["positive"] for r in base]  # documents untouched by default
    assert all(new["anchor"] != old["anchor"] for new, old in zip(out[3:], base))
    both, _ = augment_search_rows(base, AugmentConfig(copies=1, targets="both", p=0.5), seed=0)
    assert any(new["positive"] != old["positive"] for new, old in zip(both[3:], base))


@pytest.mark.parametrize("values, message", [
    ({"ops": ["swp"]}, "did you mean 'swap'"),
    ({"ops": ["thesaurus"]}, "choose one of: char, delete, paraphrase, swap, synonym, typo"),
    ({"ops": []}, "at least one op"),
    ({"p": 0.0}, "data.augment.p: must be in (0, 1]"),
    ({"p": 1.5}, "data.augment.p: must be in (0, 1]"),
    ({"copies": -1}, "data.augment.copies"),
    ({"targets": "documents"}, "data.augment.targets"),
])
def test_bad_options(values, message):
    with pytest.raises(TunewiseError, match="data.augment") as err:
        AugmentConfig(**values)
    assert message in str(err.value)


def test_dotted_overrides_and_yaml():
    cfg = load_config(None, ["data.augment.copies=1", "data.augment.ops=[typo, delete]", "data.augment.p=0.2"])
    assert (cfg.data.augment.copies, cfg.data.augment.ops, cfg.data.augment.p) == (1, ["typo", "delete"], 0.2)
    assert load_config(None).data.augment.copies == 0  # off by default
    with pytest.raises(TunewiseError, match="data.augment.opps"):
        load_config(None, ["data.augment.opps=[delete]"])
    with pytest.raises(TunewiseError, match="did you mean 'delete'"):
        load_config(None, ["data.augment.ops=[delet]"])


def test_a_task_without_augmentation_refuses_it():
    with pytest.raises(TunewiseError, match="data.augment.copies: task causal-lm"):
        load_config(None, ["task=causal-lm", "data.augment.copies=1"])


def test_synonym_uses_the_models_embedding_neighbours(tiny_st_model):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_st_model, device="cpu")
    vocab = set(model.tokenizer.get_vocab())
    texts = ["please tell me about the roof rules", "how long does the permit take"]
    cfg = AugmentConfig(copies=1, ops=["synonym"], p=0.3)
    out, report = augment_search_rows(rows(texts), cfg, seed=0, model=model)
    assert report["augmented"] == 2
    for new, old in zip(out[2:], texts):
        changed = [(a, b) for a, b in zip(old.split(), new["anchor"].split()) if a != b]
        assert 1 <= len(changed) <= 2 and all(b in vocab for _, b in changed)
    assert out == augment_search_rows(rows(texts), cfg, seed=0, model=model)[0]
    with pytest.raises(TunewiseError, match="'synonym' needs the model"):
        augment_labeled(texts, [0, 1], cfg, seed=0)


def test_paraphrase_calls_the_synthetic_generator(monkeypatch):
    import tunewise.data.synthetic as synthetic

    calls = []

    def fake(texts, config, *, seed):
        calls.append((list(texts), seed))
        return [f"{t} (omformulerad)" for t in texts]

    monkeypatch.setattr(synthetic, "paraphrase", fake, raising=False)
    cfg = AugmentConfig(copies=2, ops=["paraphrase"])
    out, _, report = augment_labeled(SWEDISH, [0, 1, 2], cfg, seed=7, config=object())
    assert out[3:6] == [f"{t} (omformulerad)" for t in SWEDISH] and calls == [(SWEDISH, 7), (SWEDISH, 8)]
    with pytest.raises(TunewiseError, match="'paraphrase' needs the run config"):
        augment_labeled(SWEDISH, [0, 1, 2], cfg, seed=7)
    assert "paraphrase" in OPS


def test_only_training_rows_are_augmented(tiny_st_model, pairs_file):
    from tunewise.data.training_rows import search_rows
    from tunewise.tasks.embedding import EmbeddingTask

    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs_file}", "data.augment.copies=1",
                             "train.early_stopping_patience=1"])
    task = EmbeddingTask()
    data = task.prepare_data(cfg)
    eval_before, val_before = json.dumps(data.eval.queries), json.dumps(data.validation.queries)
    train, report = search_rows(data.train, data, cfg)
    assert report["augmented"] > 0 and len(train) == len(data.train) + report["augmented"]
    assert json.dumps(data.eval.queries) == eval_before and json.dumps(data.validation.queries) == val_before
    held = set(data.eval.queries.values()) | set(data.validation.queries.values())
    trained = {r["anchor"] for r in data.train}
    for row in train[len(data.train):]:  # every copy comes from a training row, none from a held-out query
        assert row["positive"] in {r["positive"] for r in data.train} and row["anchor"] not in held | trained


def test_fit_with_augmentation(tiny_st_model, pairs_file, tmp_path):
    import tunewise

    cfg = load_config(None, [f"model={tiny_st_model}", f"data.train={pairs_file}", f"output_dir={tmp_path / 'run'}",
                             "train.epochs=1", "train.batch_size=8", "train.learning_rate=1e-3", "data.augment.copies=1"])
    metrics = tunewise.fit(cfg, console=Console(quiet=True)).metrics
    assert metrics["data"]["train_examples"] == 48  # the labeled pairs: evaluation split first, untouched
    assert metrics["train"]["examples"] == 2 * 48  # every query's copy changed, so every copy trains
    assert metrics["train"]["steps"] >= 12  # 96 rows / batch 8: a copy doubles the steps of an epoch
    assert metrics["config"]["data"]["augment"]["copies"] == 1


@pytest.mark.parametrize("strategy", ["full", "head"])
def test_classification_fit_with_augmentation(tiny_bert, tmp_path, monkeypatch, strategy):
    import random

    import tunewise

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    rng = random.Random(0)
    lines = []
    for label, words in (("alpha", range(0, 3)), ("beta", range(10, 13)), ("gamma", range(20, 23))):
        for _ in range(12):
            lines.append(json.dumps({"text": " ".join(f"w{rng.choice(list(words))}" for _ in range(5)), "label": label}))
    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = load_config(None, ["task=classification", f"model={tiny_bert}", f"data.train={data}", f"output_dir={tmp_path / 'out'}",
                             "train.epochs=2", "train.learning_rate=1e-3", "train.batch_size=8", "data.eval_fraction=0.25",
                             "data.augment.copies=1", "data.augment.ops=[swap]", f"strategy={strategy}"])
    metrics = tunewise.fit(cfg, console=Console(quiet=True)).metrics
    n = metrics["data"]["train_examples"]
    if strategy == "head":  # frozen features: the copies are more cached head inputs
        details = metrics["strategy"]["details"]
        assert details["levers"]["augmented"] > 0 and details["feature_cache"]["inputs"] == n + details["levers"]["augmented"]
    else:
        assert n < metrics["train"]["examples"] <= 2 * n  # a swap of two equal words changes nothing and is dropped
