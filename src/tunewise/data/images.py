"""Image data: an image folder or a CSV/JSONL of paths, validated images, tensor transforms.

Sources:

* a folder with one subfolder per class (``root/cat/1.jpg``): labels are the subfolder names;
* a CSV/JSONL/Parquet file with an image-path column (role ``image``) and a ``label`` or
  ``caption`` column (renamed with ``data.columns``). Paths resolve inside ``image.root``
  (default: the file's folder); a path that escapes it (``../x.png``, an absolute path
  elsewhere, a symlink out) is rejected.

Every image is decoded once while the data is prepared: a corrupt or unreadable file stops
the run naming the file (``image.on_bad_image: stop``) or is skipped and counted (``skip``).
Images of any mode (grey, palette, RGBA, CMYK, 16-bit) and size are converted to RGB and
resized when they are loaded, so mixed inputs need no preparation.

Transforms use PIL and torch only (no torchvision): resize the short side and centre-crop
for evaluation; a random resized crop, horizontal flip and colour jitter for training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunewise.config import DataConfig
from tunewise.data.image_config import ImageConfig
from tunewise.data.readers import (
    label_value,
    no_labels_left,
    read_records,
    require_columns,
    text_value,
)
from tunewise.errors import TunewiseError, did_you_mean

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Role -> default column name of image data; users rename with data.columns.{role}.
IMAGE_COLUMNS = {"image": "image", "label": "label", "caption": "caption"}


@dataclass
class ImageRecords:
    """Validated image paths with their label or caption, and what was skipped."""

    paths: list[Path]
    targets: list[str]  # label names or captions
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    missing_labels: int | None = None  # rows left out for a missing label (None: captions, not labels)

    def report(self) -> dict[str, Any]:
        report: dict[str, Any] = {"images_skipped": len(self.skipped), "skipped_examples": self.skipped[:3]}
        if self.missing_labels is not None:
            report["skipped_missing_labels"] = self.missing_labels
        return report


def image_columns(cfg: DataConfig) -> dict[str, str]:
    """Role -> column for image data; unknown roles are errors with a suggestion."""
    known = {*IMAGE_COLUMNS, "text", "query", "positive", "negative", "id"}
    for role in cfg.columns:
        if role not in known:
            raise TunewiseError(f"data.columns: unknown role '{role}'{did_you_mean(role, IMAGE_COLUMNS)}; "
                                f"image roles are: {', '.join(IMAGE_COLUMNS)}")
    return {**IMAGE_COLUMNS, **{k: v for k, v in cfg.columns.items() if k in IMAGE_COLUMNS}}


def resolve_inside(root: Path, value: str, where: str) -> Path:
    """``root / value`` resolved; must stay inside ``root`` (symlinks followed)."""
    from tunewise.files import inside_root

    return inside_root(root, value, where, kind="image", fix="keep images inside it or set image.root to a folder that holds them")


def read_image_records(cfg: DataConfig, image_cfg: ImageConfig, target: str) -> ImageRecords:
    """Image paths with labels (``target="label"``) or captions (``"caption"``), validated.

    Raises:
        TunewiseError: no data, a missing column or value, a path outside the root, a bad
            image with ``on_bad_image: stop``, or no readable image at all.
    """
    if cfg.train is None:
        raise TunewiseError("data.train: no training data given; set it to an image folder (one subfolder per class) "
                            "or a CSV/JSONL of image paths")
    source = Path(cfg.train).expanduser()
    if not source.exists():
        raise TunewiseError(f"data.train: not found: {source}")
    if source.is_dir() and cfg.format in ("auto", "folder"):
        if target != "label":
            raise TunewiseError(f"data.train: {source} is a folder; captions need a CSV/JSONL with image and caption columns")
        paths, targets = _scan_folder(source.resolve())
        missing = 0
    else:
        paths, targets, missing = _read_table(source, cfg, image_cfg, target)
    records = _validate(paths, targets, image_cfg.on_bad_image)
    records.missing_labels = missing if target == "label" else None
    return records


def _scan_folder(root: Path) -> tuple[list[Path], list[str]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise TunewiseError(f"data.train: {root} has no class subfolders; put each class's images in root/<class>/")
    paths, labels = [], []
    for d in classes:
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                paths.append(resolve_inside(root, str(f.relative_to(root)), "data.train"))
                labels.append(d.name)
    if not paths:
        raise TunewiseError(f"data.train: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {root}")
    return paths, labels


def _read_table(source: Path, cfg: DataConfig, image_cfg: ImageConfig, target: str) -> tuple[list[Path], list[str], int]:
    """Paths, targets and the number of rows left out for a missing label (``data.on_missing_label: skip``)."""
    cols = image_columns(cfg)
    records = read_records(source, cfg.format, option="data.train")
    require_columns(records, {"image": cols["image"], target: cols[target]}, source)
    root = Path(image_cfg.root).expanduser().resolve() if image_cfg.root else source.resolve().parent
    if not root.is_dir():
        raise TunewiseError(f"image.root: not a folder: {root}")
    paths, targets, missing = [], [], 0
    for i, r in enumerate(records):
        if target == "label":  # the same missing-label rule as text classification
            value = label_value(r, cols[target], i, source, cfg.on_missing_label)
            if value is None:
                missing += 1
                continue
        else:
            value = text_value(r, cols[target], i, source)
        paths.append(resolve_inside(root, text_value(r, cols["image"], i, source), f"{source}: row {i + 1}"))
        targets.append(value)
    if not paths:
        raise no_labels_left(source, cols[target], missing)
    return paths, targets, missing


def _validate(paths: list[Path], targets: list[str], on_bad: str) -> ImageRecords:
    from PIL import Image

    kept_paths, kept_targets, skipped = [], [], []
    for path, tgt in zip(paths, targets):
        try:
            with Image.open(path) as image:
                image.load()  # decodes: truncated and corrupt files fail here, not mid-training
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            reason = "file not found" if isinstance(err, FileNotFoundError) else str(err).splitlines()[0] or type(err).__name__
            if on_bad == "stop":
                raise TunewiseError(f"image {path}: cannot read it ({reason}); fix or remove it, or set image.on_bad_image=skip") from None
            skipped.append(f"{path}: {reason}")
            continue
        kept_paths.append(path)
        kept_targets.append(tgt)
    if not kept_paths:
        raise TunewiseError(f"data.train: none of the {len(paths)} images could be read (e.g. {skipped[0] if skipped else '?'})")
    return ImageRecords(kept_paths, kept_targets, skipped)


# ---------------------------------------------------------------------------------------
# loading and transforms (PIL + torch; no torchvision)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: size and per-channel normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_rgb(path: Path):
    """The image as RGB (palette, grey, RGBA on white, CMYK and 16-bit converted)."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA")
            canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return Image.alpha_composite(canvas, image).convert("RGB")
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            array = torch.tensor(list(image.getdata()), dtype=torch.float32)
            lo, hi = float(array.min()), float(array.max())
            scaled = ((array - lo) / max(hi - lo, 1.0) * 255).to(torch.uint8).tolist()
            grey = Image.new("L", image.size)
            grey.putdata(scaled)
            return grey.convert("RGB")
        return image.convert("RGB")


def to_tensor(image, pre: Preprocess) -> torch.Tensor:
    """An RGB PIL image of size ``pre.size`` -> normalised float tensor (3, H, W)."""
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = data.view(image.size[1], image.size[0], 3).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(pre.mean).view(3, 1, 1)
    std = torch.tensor(pre.std).view(3, 1, 1)
    return (x - mean) / std


def eval_transform(image, pre: Preprocess):
    """Resize the short side to ``size`` and centre-crop a square."""
    from PIL import Image

    w, h = image.size
    scale = pre.size / min(w, h)
    image = image.resize((max(pre.size, round(w * scale)), max(pre.size, round(h * scale))), Image.Resampling.BICUBIC)
    w, h = image.size
    left, top = (w - pre.size) // 2, (h - pre.size) // 2
    return image.crop((left, top, left + pre.size, top + pre.size))


def train_transform(image, pre: Preprocess, cfg: ImageConfig, rng: random.Random):
    """Random resized crop (area share >= crop_scale, aspect 3/4..4/3), flip, colour jitter."""
    from PIL import Image, ImageEnhance

    if not cfg.augment:
        return eval_transform(image, pre)
    w, h = image.size
    box = (0, 0, w, h)
    for _ in range(10):
        area = w * h * rng.uniform(cfg.crop_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
            box = (left, top, left + cw, top + ch)
            break
    image = image.resize((pre.size, pre.size), Image.Resampling.BICUBIC, box=box)
    if cfg.flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(1 - j, 1 + j))
    return image


class ImageDataset(torch.utils.data.Dataset):
    """Images (loaded on access) with integer labels, as ``{"pixel_values", "labels"}``.

    Args:
        paths: image files.
        labels: class index per image (or None).
        pre: size and normalisation.
        augment: the ImageConfig whose augmentation applies (None: evaluation transform).
        seed: mixed into every augmentation draw with the image's index.

    A training image's augmentation is drawn from torch's global random stream (one number per
    access), which the Trainer seeds at the start and saves in every checkpoint: a resumed run
    then draws exactly the augmentations the uninterrupted one would have.
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int] | None, pre: Preprocess,
                 augment: ImageConfig | None = None, seed: int = 0) -> None:
        self.paths, self.labels, self.pre, self.augment = list(paths), labels, pre, augment
        self._seed = int(seed)

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        image = load_rgb(self.paths[i])
        if self.augment is not None:
            draw = int(torch.randint(0, 2**62, (1,)))  # from the checkpointed stream (see the class docstring)
            rng = random.Random(draw ^ (self._seed * 1_000_003 + i))
            image = train_transform(image, self.pre, self.augment, rng)
        else:
            image = eval_transform(image, self.pre)
        return to_tensor(image, self.pre)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"pixel_values": self.image(i)}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
        return item


def encode_batches(dataset: ImageDataset, batch_size: int, desc: str = "encoding images", progress: bool = True):
    """Batches ``{"pixel_values": (b, 3, S, S)}`` of the whole dataset, with a progress bar."""
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, disable=not progress, console=Console(stderr=True)) as bar:
        task = bar.add_task(desc, total=len(dataset))
        for start in range(0, len(dataset), batch_size):
            items = [dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))]
            bar.advance(task, len(items))
            yield {"pixel_values": torch.stack(items)}


def image_content_keys(paths: list[Path]) -> list[str]:
    """One feature-cache key per image: its content hash (a renamed file hits, an edited one misses)."""
    import hashlib

    return [f"image:{hashlib.sha256(Path(p).read_bytes()).hexdigest()}" for p in paths]
