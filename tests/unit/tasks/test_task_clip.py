"""Text-to-image search with a tiny random CLIP built from config (no download)."""

from __future__ import annotations

import os
import random
import string

import pytest
import torch
from rich.console import Console

from tunewise.config import load_config
from tunewise.errors import TunewiseError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 20)}


def caption_file(root, n_per_colour=6, caption_column="caption"):
    rng = random.Random(0)
    (root / "img").mkdir(parents=True)
    lines = [f"image,{caption_column}"]
    for name, colour in COLOURS.items():
        for i in range(n_per_colour):
            size = (rng.randint(20, 40), rng.randint(20, 40))
            mode = ("RGB", "L", "RGBA")[i % 3]
            Image.new("RGB", size, colour).convert(mode).save(root / "img" / f"{name}{i}.png")
            lines.append(f"img/{name}{i}.png,a {name} square number {string.ascii_lowercase[i]}")
    (root / "pairs.csv").write_text("\n".join(lines) + "\n")
    return root / "pairs.csv"


def test_clip_end_to_end(tiny_clip, tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    from tunewise.run import fit

    data = caption_file(tmp_path / "d")
    out = tmp_path / "out"
    cfg = load_config(None, ["task=clip", f"model={tiny_clip}", f"data.train={data}", f"output_dir={out}",
                             "train.epochs=2", "train.batch_size=6", "train.learning_rate=1e-3", "eval.k=[1, 5]",
                             "data.eval_fraction=0.25"])
    m = fit(cfg, console=Console(quiet=True)).metrics
    assert m["primary_metric"] == "mrr@20"
    assert 0 <= m["after"]["mrr@5"] <= 1 and m["data"]["eval_queries"] == 6
    assert m["uncertainty"]["mrr@5"]["n"] == len(m["items"]["mrr@20"]["after"]) == 6  # per caption query

    # per-item scores average to the reported metrics: the paired intervals' point gain is after - before
    for name, interval in m["uncertainty"].items():
        assert interval["difference"] == pytest.approx(m["after"][name] - m["before"][name], abs=1e-9), name
    losses = m["train"]["history"][-1]["train_loss_per_epoch"]
    assert len(losses) == 2 and all(x == x for x in losses)
    CLIPModel.from_pretrained(str(out))  # the ecosystem's loaders open the output
    CLIPProcessor.from_pretrained(str(out))

    # tunewise predict: captions search a folder of images, scored as the saved model's own embeddings score them
    from tunewise.predict import predict
    from tunewise.tasks.clip import ClipTask

    images = sorted((tmp_path / "d" / "img").glob("*.png"))[:5]
    captions = ["a red square", "a blue square"]
    rows = predict(out, captions, corpus=[str(p) for p in images], top_k=3, progress=False)
    assert len(rows) == 6 and {r["text"] for r in rows} == set(captions) and [r["rank"] for r in rows[:3]] == [1, 2, 3]
    task = ClipTask()
    cfg.model = str(out)
    img, txt = task.embed(task.load_model(cfg, "cpu"), images, captions, 8)
    sims = txt @ img.T
    for q, caption in enumerate(captions):
        mine = [r for r in rows if r["text"] == caption]
        assert [r["score"] for r in mine] == sorted((r["score"] for r in mine), reverse=True)
        assert mine[0]["score"] == pytest.approx(float(sims[q].max()), abs=1e-4)
        for r in mine:
            assert r["score"] == pytest.approx(float(sims[q, [str(p) for p in images].index(r["hit"])]), abs=1e-4)
    vectors = predict(out, captions, progress=False)  # no corpus: the captions' embeddings
    assert len(vectors) == 2 and abs(sum(x * x for x in vectors[0]["embedding"]) - 1) < 1e-4


def test_symmetric_loss_goes_down(tiny_clip, tmp_path):
    """A few steps on the same batch lower CLIP's own contrastive loss (the Trainer path's loss)."""
    from tunewise.tasks.clip import ClipTask

    data_file = caption_file(tmp_path / "d", n_per_colour=2)
    cfg = load_config(None, ["task=clip", f"model={tiny_clip}", f"data.train={data_file}", "data.eval_size=2"])
    task = ClipTask()
    data = task.prepare_data(cfg)
    model = task.load_model(cfg, "cpu")
    from tunewise.data.images import ImageDataset

    images = ImageDataset([p for p, _ in data.train], None, task._pre)
    batch = {"pixel_values": torch.stack([images[i]["pixel_values"] for i in range(len(images))]),
             **task._texts([c for _, c in data.train], "cpu"), "return_loss": True}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]


def test_caption_column_missing(tiny_clip, tmp_path):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    data = caption_file(tmp_path / "d", n_per_colour=2, caption_column="text_of_image")
    result = CliRunner().invoke(app, ["fit", "--train", str(data), "--model", str(tiny_clip), "--set", "task=clip",
                                      "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "no column 'caption'" in lines[0]
    assert "Traceback" not in result.output


def test_clip_needs_a_model(tmp_path):
    from tunewise.tasks.clip import ClipTask

    cfg = load_config(None, ["task=clip"])
    with pytest.raises(TunewiseError, match="no packaged model"):
        ClipTask().load_model(cfg, "cpu")


def test_head_strategy_trains_only_the_projections_on_cached_tower_outputs(tiny_clip, tmp_path, monkeypatch):
    from transformers import CLIPModel

    from tunewise.run import fit

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    data = caption_file(tmp_path / "d")

    def run(out, *extra):
        cfg = load_config(None, ["task=clip", f"model={tiny_clip}", f"data.train={data}", f"output_dir={out}",
                                 "train.epochs=3", "train.batch_size=6", "eval.k=[1, 5]", "data.eval_fraction=0.25",
                                 "strategy=head", *extra])
        return fit(cfg, console=Console(quiet=True)).metrics

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    s = first["strategy"]
    assert s["trainable_params"] == 16 * 8 * 2  # the two bias-free projections, 16 -> 8
    assert s["details"]["feature_cache"]["status"] == "miss" and len(s["details"]["epoch_losses"]) == 3
    assert second["strategy"]["details"]["feature_cache"]["status"] == "hit" and second["after"] == first["after"]
    tuned, base = CLIPModel.from_pretrained(str(tmp_path / "a")), CLIPModel.from_pretrained(str(tiny_clip))
    assert not torch.equal(tuned.text_projection.weight, base.text_projection.weight)
    torch.testing.assert_close(tuned.vision_model.state_dict(), base.vision_model.state_dict())  # frozen
    with pytest.raises(TunewiseError, match="strategy.dim: CLIP's heads are its two projections"):
        run(tmp_path / "c", "strategy={name: head, dim: 4}")
