"""Architecture-generic layer discovery: the stack of transformer blocks and what lies around it.

Strategies that freeze "the first N layers", decay learning rates per layer or unfreeze one
layer group at a time need the blocks in depth order. Every transformer family keeps them in
one ``nn.ModuleList`` of identical blocks (``encoder.layer`` in BERT, ``layers`` in Llama,
``h`` in GPT-2, ``blocks`` in timm ViTs, ``transformer.resblocks`` in CLIP...). Rather than a
table of attribute names that goes stale, :func:`find_blocks` looks for that ModuleList: the
longest list of same-type children that hold parameters. Parameters outside it are split by
their position in ``named_parameters()`` order (registration order, which follows the data
flow in every ``transformers`` and timm model): before the blocks = embeddings, after = top
(final norm, pooler, head).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from tunewise.errors import TunewiseError

# Names that win a tie between two equally long lists (an encoder-decoder has two stacks).
_PREFERRED = ("layer", "layers", "h", "blocks", "block", "resblocks")


@dataclass
class LayerMap:
    """A model's parameters grouped by depth.

    Attributes:
        blocks_path: dotted name of the ModuleList of blocks (e.g. ``encoder.layer``).
        blocks: parameter names per block, bottom (input side) to top.
        embeddings: parameter names before the first block.
        top: parameter names after the last block (final norm, pooler, head).
    """

    blocks_path: str
    blocks: list[list[str]] = field(default_factory=list)
    embeddings: list[str] = field(default_factory=list)
    top: list[str] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def depth_of(self, name: str) -> int:
        """0 for embeddings, 1..depth for blocks, depth + 1 for the top (the ELECTRA/BEiT layer id)."""
        if name in self._index:
            return self._index[name]
        raise KeyError(name)

    def __post_init__(self) -> None:
        self._index: dict[str, int] = {n: 0 for n in self.embeddings}
        for i, names in enumerate(self.blocks, start=1):
            self._index.update({n: i for n in names})
        self._index.update({n: self.depth + 1 for n in self.top})


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks: the longest list of same-type blocks with parameters.

    Raises:
        TunewiseError: the model has no such list (not a layered model).
    """
    best: tuple[tuple[int, int, int], str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 1:
            continue
        children = list(module)
        if len({type(c) for c in children}) != 1 or _param_count(children[0]) == 0:
            continue
        leaf = name.rsplit(".", 1)[-1]
        score = (len(children), int(leaf in _PREFERRED), _param_count(module))
        if best is None or score > best[0]:
            best = (score, name, module)
    if best is None:
        raise TunewiseError(
            f"strategy: cannot find the layer stack of {type(model).__name__} (no list of repeated blocks); "
            "use strategy: full, head or lora"
        )
    return best[1], best[2]


def layer_map(model: nn.Module) -> LayerMap:
    """Group every parameter of ``model`` into embeddings, blocks (bottom to top) and top."""
    path, blocks = find_blocks(model)
    prefix = f"{path}." if path else ""
    per_block: list[list[str]] = [[] for _ in blocks]
    embeddings: list[str] = []
    top: list[str] = []
    seen_block = False
    for name, _ in model.named_parameters():
        if path and name.startswith(prefix):
            index = int(name[len(prefix):].split(".", 1)[0])
            per_block[index].append(name)
            seen_block = True
        elif seen_block:
            top.append(name)
        else:
            embeddings.append(name)
    return LayerMap(blocks_path=path, blocks=per_block, embeddings=embeddings, top=top)


def n_frozen_layers(depth: int, layers: int | None, fraction: float | None, option: str = "strategy") -> int:
    """How many bottom blocks to freeze, from a count or a fraction of the depth.

    Raises:
        TunewiseError: the count is larger than the depth.
    """
    if layers is not None:
        if layers > depth:
            raise TunewiseError(
                f"{option}.frozen_layers: {layers} is more than the model's {depth} layers; use 0..{depth}"
            )
        return layers
    return int(round((fraction if fraction is not None else 0.5) * depth))
