"""The ``image:`` config section: where image paths resolve, bad files, input size, augmentation,
and the image-search head and losses (read by the image tasks and CLIP)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunewise.config import register_section
from tunewise.errors import TunewiseError, did_you_mean


@dataclass
class ImageConfig:
    """Images: where paths resolve, bad files, input size, augmentation, image-search head and losses."""

    root: str | None = field(default=None, metadata={"help": "Folder that image paths in a CSV/JSONL resolve inside (default: the file's folder); "
        "paths escaping it are rejected."})
    on_bad_image: str = field(default="stop", metadata={"help": "An unreadable or corrupt image: stop (error naming the file) or skip (counted in "
        "the data report)."})
    size: int = field(default=224, metadata={"help": "Square model input size in pixels (images are resized, then cropped)."})
    augment: bool = field(default=True, metadata={"help": "Augment training images (random crop, flip, colour jitter below)."})
    crop_scale: float = field(default=0.6, metadata={"help": "Random resized crop keeps at least this share of the image area (1 = no crop)."})
    flip: bool = field(default=True, metadata={"help": "Random horizontal flip (turn off for digits and text)."})
    color_jitter: float = field(default=0.2, metadata={"help": "Random brightness/contrast/saturation change of up to this factor (0 = off)."})
    freeze_batchnorm: bool = field(default=True, metadata={"help": "Keep BatchNorm statistics fixed while fine-tuning (small batches of new images "
        "would corrupt them)."})
    mean: list[float] | None = field(default=None, metadata={"help": "Per-channel normalisation mean (default: the backbone's)."})
    std: list[float] | None = field(default=None, metadata={"help": "Per-channel normalisation std (default: the backbone's)."})
    projection_dim: int | None = field(default=None, metadata={"help": "image-search: add a linear projection head to this many dimensions."})
    temperature: float = field(default=0.05, metadata={"help": "image-search loss mnrl (in-batch contrastive with labels): softmax temperature."})
    margin: float = field(default=0.2, metadata={"help": "image-search loss triplet: cosine-distance margin (batch-hard)."})
    arcface_margin: float = field(default=0.3, metadata={"help": "image-search loss arcface: additive angular margin (radians)."})
    arcface_scale: float = field(default=30.0, metadata={"help": "image-search loss arcface: logit scale."})

    def __post_init__(self) -> None:
        if self.on_bad_image not in ("stop", "skip"):
            hint = did_you_mean(self.on_bad_image, ["stop", "skip"])
            raise TunewiseError(f"image.on_bad_image: unknown '{self.on_bad_image}'{hint}; use stop or skip")
        if self.size < 8:
            raise TunewiseError(f"image.size: must be at least 8 pixels, got {self.size}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise TunewiseError(f"image.crop_scale: must be in (0, 1], got {self.crop_scale}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise TunewiseError(f"image.color_jitter: must be in [0, 1), got {self.color_jitter}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise TunewiseError(f"image.{name}: give 3 values (R, G, B), got {value}")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise TunewiseError(f"image.std: every value must be positive, got {self.std}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise TunewiseError(f"image.projection_dim: must be at least 1, got {self.projection_dim}")
        for name in ("temperature", "arcface_scale"):
            if getattr(self, name) <= 0:
                raise TunewiseError(f"image.{name}: must be positive, got {getattr(self, name)}")
        if self.margin < 0 or self.arcface_margin < 0:
            raise TunewiseError("image.margin and image.arcface_margin: must be 0 or more")


register_section("image", ImageConfig)
