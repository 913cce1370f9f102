"""``tunewise predict``: finished tiny runs used on new inputs (encode, search, labels, generation), and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from use_fixtures import QUIET, build_classifier_run, build_embedding_run  # noqa: E402

import tunewise
from tunewise.config import load_config
from tunewise.errors import TunewiseError
from tunewise.predict import Predictor, open_run, predict, ranked_labels

from conftest import make_pairs  # noqa: E402
from tiny_models import json_rows, lm_config, write_jsonl  # noqa: E402

embedding_run = pytest.fixture(scope="module")(build_embedding_run)
classifier_run = pytest.fixture(scope="module")(build_classifier_run)


def test_encode_matches_the_saved_sentence_transformer(embedding_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["roof leaking badly", "door lock broken", "garden wall"]
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(texts) + "\n\n", encoding="utf-8")  # blank lines are skipped
    rows = predict(embedding_run, inputs, output=tmp_path / "vec.npy", progress=False)
    expected = SentenceTransformer(str(embedding_run)).encode(texts, normalize_embeddings=True)
    saved = np.load(tmp_path / "vec.npy", allow_pickle=False)
    assert saved.shape == expected.shape == (3, 32)
    np.testing.assert_allclose(saved, expected, atol=1e-5)
    assert [r["text"] for r in rows] == texts
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), expected, atol=1e-5)
    assert tunewise.predict(embedding_run, texts, progress=False) == rows  # the module is callable: the Python API


def test_search_ranks_the_corpus_by_cosine(embedding_run, tmp_path):
    from sentence_transformers import SentenceTransformer

    corpus = [r["positive"] for r in make_pairs(14)]
    queries = [r["query"] for r in make_pairs(4)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus), encoding="utf-8")
    out = tmp_path / "hits.csv"
    rows = predict(embedding_run, queries, corpus=tmp_path / "corpus.jsonl", top_k=3, output=out, progress=False)
    assert len(rows) == 4 * 3 and [r["rank"] for r in rows[:3]] == [1, 2, 3]
    model = SentenceTransformer(str(embedding_run))
    sims = model.encode(queries, normalize_embeddings=True) @ model.encode(corpus, normalize_embeddings=True).T
    for q, query in enumerate(queries):  # the same best three, in order, with the same scores
        mine = [r for r in rows if r["text"] == query]
        best = np.argsort(-sims[q], kind="stable")[:3]
        assert [r["hit"] for r in mine] == [corpus[i] for i in best]
        assert [r["score"] for r in mine] == pytest.approx([float(sims[q, i]) for i in best], abs=1e-4)
    with open(out, newline="", encoding="utf-8") as fh:
        written = list(csv.DictReader(fh))
    assert [w["hit"] for w in written] == [r["hit"] for r in rows] and list(written[0]) == ["text", "rank", "hit", "score"]


def test_classifier_labels_with_probabilities(classifier_run, tmp_path):
    from transformers import pipeline

    texts = ["w0 w1 w2 w0 w1", "w20 w21 w22 w20 w21", "w10 w11 w12 w10 w11"]
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    rows = predict(classifier_run, tmp_path / "in.csv", top_k=3, output=tmp_path / "out.jsonl", progress=False)
    classify = pipeline("text-classification", model=str(classifier_run), top_k=None)
    for row, text in zip(rows, texts):
        scores = classify(text)
        scores = scores[0] if isinstance(scores[0], list) else scores  # one text: a list of label dicts
        reference = {d["label"]: d["score"] for d in scores}
        assert row["label"] == max(reference, key=reference.get)
        assert {t["label"]: t["score"] for t in row["top"]} == pytest.approx(reference, abs=1e-4)
        assert sum(t["score"] for t in row["top"]) == pytest.approx(1.0, abs=1e-4)
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written == rows


def test_causal_lm_generates_with_the_runs_template(tmp_path, tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunewise.data.chat import ChatExample, Formatter
    from tunewise.tasks.causal_lm_eval import generate

    data = write_jsonl(tmp_path / "train.jsonl", json_rows())
    run = tunewise.fit(lm_config(tmp_path, tiny_llama, data, strategy="full", train__epochs=2), console=QUIET).output_dir
    prompts = ["item roof 3", "item gate 9"]
    rows = predict(run, [{"prompt": p} for p in prompts], progress=False)
    # the reference: the run's own evaluation path on the saved model
    tokenizer = AutoTokenizer.from_pretrained(str(run))
    model = AutoModelForCausalLM.from_pretrained(str(run)).eval()
    cfg = load_config(run / "config.yaml")
    formatter = Formatter(tokenizer, tokenizer.chat_template, cfg.llm.system_prompt)
    examples = [ChatExample([{"role": "user", "content": p}, {"role": "assistant", "content": ""}], p, "") for p in prompts]
    assert [r["output"] for r in rows] == generate(model, formatter, examples, cfg.llm, cfg.llm.max_length)
    assert [r["prompt"] for r in rows] == prompts


def test_ranked_labels_orders_and_cuts():
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    rows = ranked_labels(probs, ["a", "b", "c"], top_k=2)
    assert rows[0]["label"] == "b" and rows[0]["score"] == pytest.approx(0.7)
    assert [t["label"] for t in rows[0]["top"]] == ["b", "c"]
    assert [t["label"] for t in rows[1]["top"]] == ["a", "c"]
    with pytest.raises(ValueError, match="exactly one"):
        Predictor(columns=("text",))


# -- bad input -------------------------------------------------------------------------------------


def test_a_folder_that_is_not_a_run(tmp_path, tiny_st_model):
    with pytest.raises(TunewiseError, match="is not a tunewise run"):
        open_run(tiny_st_model)  # a model folder, not a run
    with pytest.raises(TunewiseError, match="is not a folder"):
        open_run(tmp_path / "nowhere")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "metrics.json").write_text("{", encoding="utf-8")
    (tmp_path / "r" / "config.yaml").write_text("task: embedding\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match="not valid JSON"):
        open_run(tmp_path / "r")


def test_columns_the_model_cannot_take_and_bad_values(embedding_run, classifier_run, tmp_path):
    bad = tmp_path / "in.csv"
    bad.write_text("question,answer\nhow,this\n", encoding="utf-8")
    with pytest.raises(TunewiseError, match=r"no column this model takes \(expected text or sentence; the file has question, answer\)"):
        predict(classifier_run, bad, progress=False)
    with pytest.raises(TunewiseError, match="--column: .* has no column 'body'"):
        predict(classifier_run, bad, column="body", progress=False)
    assert predict(classifier_run, bad, column="question", progress=False)[0]["question"] == "how"
    empty = tmp_path / "e.jsonl"
    empty.write_text('{"text": "fine"}\n{"text": ""}\n', encoding="utf-8")
    with pytest.raises(TunewiseError, match="row 2, column 'text': expected non-empty text"):
        predict(embedding_run, empty, progress=False)
    with pytest.raises(TunewiseError, match="--corpus: the classification model does not search"):
        predict(classifier_run, ["w1"], corpus=["w2"], progress=False)
    with pytest.raises(TunewiseError, match=r"--output: .*\.npy holds embeddings"):
        predict(classifier_run, ["w1"], output=tmp_path / "x.npy", progress=False)
    with pytest.raises(TunewiseError, match="--output: .* must end in"):
        predict(embedding_run, ["a"], output=tmp_path / "x.txt", progress=False)
    assert not list(tmp_path.glob("x.*"))  # nothing written that looks like a result


def _cli(args):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    return CliRunner().invoke(app, args)


def test_cli_predict_prints_rows_and_refuses_a_non_run(embedding_run, tmp_path):
    inputs = tmp_path / "q.txt"
    inputs.write_text("roof question\n", encoding="utf-8")
    corpus = tmp_path / "c.txt"
    corpus.write_text("answer regarding roof\nanswer regarding door\n", encoding="utf-8")
    result = _cli(["predict", str(embedding_run), str(inputs), "--corpus", str(corpus), "--top-k", "2"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["rank"] for r in rows] == [1, 2] and {r["hit"] for r in rows} == set(corpus.read_text().split("\n")[:2])
    result = _cli(["predict", str(tmp_path), str(inputs)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: RUN:") and "is not a tunewise run" in lines[0]


def _image_folder(root, n_per_class=6):
    import random

    from PIL import Image

    rng = random.Random(0)
    for label, colour in {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            Image.new("RGB", (24, 24), tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)).save(root / label / f"{i}.png")
    return root


def _image_run(task, model, tmp_path, *extra):
    images = _image_folder(tmp_path / "images")
    cfg = load_config(None, [f"task={task}", f"model={model}", f"data.train={images}", f"output_dir={tmp_path / task}",
                             "image.size=32", "train.epochs=1", "train.batch_size=6", "data.eval_fraction=0.34", "eval.k=[1, 5]", *extra])
    return tunewise.fit(cfg, console=QUIET).output_dir, images


@pytest.mark.slow  # an image run is fitted first (about 40 s on a shared CPU)
def test_image_classifier_labels_image_files(tiny_resnet, tmp_path):
    from tunewise.tasks.image_classification import ImageClassificationTask

    run, images = _image_run("image-classification", tiny_resnet, tmp_path)
    files = sorted((images / "red").glob("*.png"))[:2] + sorted((images / "blue").glob("*.png"))[:1]
    (tmp_path / "in.csv").write_text("image\n" + "".join(f"{f.relative_to(tmp_path)}\n" for f in files), encoding="utf-8")
    rows = predict(run, tmp_path / "in.csv", top_k=3, progress=False)  # paths relative to the CSV's folder
    # the reference: the task's own evaluation path on the saved classifier (tunewise evaluate's load)
    task = ImageClassificationTask()
    cfg = load_config(run / "config.yaml")
    task.prepare_data(cfg)
    cfg.model = str(run)
    model = task.load_trained(cfg, "cpu")
    classes = task._classes
    assert [r["label"] for r in rows] == [classes[i] for i in task.predict(model, files, batch_size=4, progress=False)]
    assert all(abs(sum(t["score"] for t in r["top"]) - 1) < 1e-4 and len(r["top"]) == 3 for r in rows)
    assert [r["image"] for r in rows] == [str(f) for f in files]
    with pytest.raises(TunewiseError, match="row 1, column 'image': image file not found"):
        predict(run, [{"image": "missing.png"}], progress=False)


@pytest.mark.slow  # an image run is fitted first (about 40 s on a shared CPU)
def test_image_search_finds_same_coloured_images(tiny_resnet, tmp_path):
    from tunewise.tasks.image_search import ImageSearchTask

    run, images = _image_run("image-search", tiny_resnet, tmp_path, "image.projection_dim=8")
    queries = [sorted((images / c).glob("*.png"))[0] for c in ("red", "green")]
    rows = predict(run, [str(q) for q in queries], corpus=images, top_k=4, progress=False)  # a folder of images as corpus
    assert len(rows) == 8 and rows[0]["hit"] == str(queries[0]) and rows[0]["score"] == pytest.approx(1.0, abs=1e-4)
    task = ImageSearchTask()
    cfg = load_config(run / "config.yaml")
    cfg.model = str(run)
    emb = task.embed(task.load_model(cfg, "cpu"), queries, batch_size=2, progress=False)
    vectors = predict(run, [str(q) for q in queries], progress=False)
    np.testing.assert_allclose(np.array([v["embedding"] for v in vectors]), emb.numpy(), atol=1e-5)
