"""The architecture of a vision network that no config describes, counted on one forward pass.

tunewise's image tasks also train networks without a ``config.json``: the packaged
EfficientNet-Lite0, timm backbones, and the folders runs save from them
(:mod:`tunewise.models.vision`). They are loaded with the image tasks' own loader
(:func:`tunewise.models.vision.load_features`); their parameters are counted on the network
and their activations traced: one forward pass of two blank images in training mode, with
``torch.autograd.graph.saved_tensors_hooks`` recording every tensor autograd keeps for
backward, credited to the block of the layer stack
(:func:`tunewise.strategies.layers.find_blocks`) that saved it first. The estimate
(:func:`tunewise.memory.activations.cnn_activations`) scales the counts with the image area.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.errors import TunewiseError
from tunewise.memory.architecture import ArchSpec, TracedActivations

TRACE_BATCH = 2  # BatchNorm needs more than one value per channel in training mode


def is_vision_backbone(model: Any) -> bool:
    """Whether ``model`` names a backbone only :mod:`tunewise.models.vision` can read (no config.json):
    None (the packaged EfficientNet-Lite0), ``efficientnet-lite0``, ``timm:<name>``, or a folder
    saved from one of them."""
    from tunewise.models.vision import META_FILE, PACKAGED

    if model is None or model in ("", PACKAGED):
        return True
    if not isinstance(model, (str, Path)):
        return False
    if str(model).startswith("timm:"):
        return True
    path = Path(model).expanduser()
    return path.is_dir() and (path / META_FILE).is_file() and not (path / "config.json").is_file()


def load_vision_arch(model: str | Path | None, image_size: int) -> ArchSpec:
    """Load the backbone as the image tasks do and trace it at ``image_size``.

    Raises:
        TunewiseError: the loader's own (missing package, folder or timm model).
    """
    from tunewise.models.vision import load_features

    features, meta = load_features(None if model is None else str(model), image_size)
    return spec_from_network(features, image_size, feature_dim=meta.dim, source=meta.source)


def spec_from_network(net: Any, image_size: int, *, feature_dim: int, source: str = "") -> ArchSpec:
    """A ``cnn`` :class:`ArchSpec` for a torch network mapping (b, 3, S, S) images to (b, feature_dim).

    Args:
        net: the network (it is run once in training mode; its BatchNorm statistics move).
        image_size: S, the side it is traced at.
        feature_dim: width of its pooled output (what a head sits on).
        source: a label for reports.
    """
    traced = trace_activations(net, image_size)
    return ArchSpec(family="cnn", n_layers=len(traced.blocks), hidden=feature_dim, n_params=traced.params,
                    image_size=image_size, traced=traced, model_type=type(net).__name__, source=source)


def _stack(net: Any) -> list | None:
    """The blocks of the network's layer stack, bottom to top (None: it has no stack)."""
    from tunewise.strategies.layers import find_blocks

    try:
        return list(find_blocks(net)[1])
    except TunewiseError:
        return None


def trace_activations(net: Any, image_size: int) -> TracedActivations:
    """Saved fp32 elements per image, per block, of one training-mode forward pass of ``net``
    (a network without a layer stack is one block)."""
    import torch

    stack = _stack(net)
    blocks = stack or [net]
    where: list[Any] = ["stem" if stack else 0]
    ran: dict[int, Any] = {}

    def record(module: Any, _args: Any, _out: Any) -> None:  # a hook that returned a value would replace the output
        ran[id(module)] = module

    hooks = [m.register_forward_hook(record) for m in net.modules()]
    for i, block in enumerate(stack or []):
        hooks.append(block.register_forward_pre_hook(lambda _m, _a, i=i: where.__setitem__(0, i)))
        hooks.append(block.register_forward_hook(lambda _m, _a, _o: where.__setitem__(0, "top")))
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    saved: dict[int, tuple[Any, int]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in saved:
            saved[ptr] = (where[0], t.untyped_storage().nbytes())
        return t

    was = net.training
    net.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.zeros(TRACE_BATCH, 3, image_size, image_size))
    finally:
        net.train(was)
        for hook in hooks:
            hook.remove()
    per_image = 4 * TRACE_BATCH  # bytes -> fp32 elements of one image

    def total(part: Any) -> float:
        return sum(n for w, n in saved.values() if w == part) / per_image

    used = list({id(p): p for m in ran.values() for p in m.parameters(recurse=False)}.values())  # shared weights once
    return TracedActivations(image_size=image_size, blocks=tuple(total(i) for i in range(len(blocks))), stem=total("stem"),
                             top=total("top"), params=sum(p.numel() for p in used),
                             largest_param=max((p.numel() for p in used), default=0))
