"""Strategy options: dataclasses composed by concept, read from one flat ``strategy:`` mapping.

Users write one level of keys, ``strategy: {name: lora, rank: 8, layer_decay: 0.9,
interpolate: [0, 0.5, 1]}``. In code, a strategy's options are made of parts, one per concept,
each a dataclass that validates itself in ``__post_init__`` with help text on every field:

| part | keys | strategies |
|---|---|---|
| :class:`~tunewise.strategies.schedule.ScheduleOptions` | head_lr, backbone_lr, layer_decay, unfreeze_every, unfreeze_unit, head_dim | full, partial, lora, qlora |
| :class:`WiseFTOptions` | interpolate, max_forgetting, general_data | full, partial, lora, qlora |
| :class:`~tunewise.strategies.partial.FreezeOptions` | frozen_layers, frozen_fraction | partial |
| :class:`~tunewise.strategies.lora.AdapterOptions` | rank, alpha, dropout, target_modules, merge | lora, qlora |
| :class:`~tunewise.strategies.qlora.QuantOptions` | compute_dtype, double_quant | qlora |

A part is a field made with :func:`part`; its keys stand at the top level of the user's
mapping, so no two parts of one class may share a key. What crosses parts (LoRA's
``interpolate`` and ``head_dim`` need ``merge``) is checked by the composed class's own
``__post_init__``, after every part has checked itself. The ``head`` strategy has one concept
and one flat dataclass. ``QLoraOptions`` extends ``LoraOptions`` by one part (``quant``):
QLoRA is LoRA over a quantized base, every LoRA rule holds, and one level of inheritance says
so more plainly than repeating the parts and the cross-part check.

Reading goes through the same :func:`tunewise.config.from_dict` as every config section (type
coercion, "unknown config key ... valid keys here" with the keys in declaration order), over a
flat view of the parts.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tunewise.config import from_dict
from tunewise.errors import TunewiseError


def part(cls: type) -> Any:
    """A field holding the option part ``cls`` (its keys are flat in the user's mapping)."""
    return field(default_factory=cls, metadata={"part": True})


def _flat_fields(cls: type) -> list[tuple[type, dataclasses.Field]]:
    """(owning dataclass, field) for every user-facing key of ``cls``, parts expanded in order."""
    out: list[tuple[type, dataclasses.Field]] = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("part"):
            out += _flat_fields(f.default_factory)  # type: ignore[arg-type]
        elif f.init:
            out.append((cls, f))
    return out


def option_names(cls: type) -> list[str]:
    """The keys users may give for options class ``cls`` (parts expanded), in declaration order."""
    return [f.name for _, f in _flat_fields(cls)]


@functools.cache
def _flat_view(cls: type) -> type:
    """A plain dataclass with every key of ``cls`` (no validation): what the config reader fills."""
    specs = []
    for owner, f in _flat_fields(cls):
        kwargs: dict[str, Any] = {"metadata": f.metadata}
        if f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            kwargs["default_factory"] = f.default_factory  # type: ignore[misc]
        specs.append((f.name, typing.get_type_hints(owner)[f.name], field(**kwargs)))
    names = [name for name, _, _ in specs]
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__name__}: two option parts share a key ({names})")
    return dataclasses.make_dataclass(f"{cls.__name__}Keys", specs)


def _build(cls: type, flat: Any) -> Any:
    kwargs = {f.name: _build(f.default_factory, flat) if f.metadata.get("part") else getattr(flat, f.name)  # type: ignore[arg-type]
              for f in dataclasses.fields(cls) if f.init}
    return cls(**kwargs)


def options_from_dict(cls: type, raw: dict[str, Any]) -> Any:
    """Validated options of class ``cls`` from the user's flat ``strategy:`` keys (without ``name``).

    Raises:
        TunewiseError: an unknown key (with the valid ones), a wrong type, or a value a part refuses.
    """
    if not any(f.metadata.get("part") for f in dataclasses.fields(cls)):
        return from_dict(cls, raw, prefix="strategy")
    return _build(cls, from_dict(_flat_view(cls), raw, prefix="strategy"))


@dataclass
class WiseFTOptions:
    """WiSE-FT after training: score blends of the pre-trained and fine-tuned weights (:mod:`tunewise.wiseft`)."""

    interpolate: list[float] | None = field(default=None, metadata={"help": "WiSE-FT: after training, evaluate these blends alpha in [0, 1] of base "
        "and fine-tuned weights."})
    max_forgetting: float = field(default=0.05, metadata={"help": "WiSE-FT: largest allowed relative drop on the general-domain set (0.05 = 5 %)."})
    general_data: str | None = field(default=None, metadata={"help": "WiSE-FT: general-domain pairs file (default: the packaged English FAQ)."})

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_forgetting <= 1.0:
            raise TunewiseError(f"strategy.max_forgetting: must be in [0, 1] (0.05 = 5 % drop), got {self.max_forgetting}")
        if self.interpolate is not None:
            from tunewise.strategies.interpolate import check_alphas

            self.interpolate = check_alphas(self.interpolate, option="strategy.interpolate")


@runtime_checkable
class HasWiseFT(Protocol):
    """Options of a strategy whose runs may end with a WiSE-FT sweep."""

    wiseft: WiseFTOptions
