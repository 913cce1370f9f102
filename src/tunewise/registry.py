"""An explicit registry keyed by the name users type in a config or on the command line.

Tasks, strategies and losses register themselves here with a decorator; configs name them
by string and are resolved through :meth:`Registry.get`, never by importing dotted paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from tunewise.errors import TunewiseError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping with helpful errors for unknown names.

    Args:
        kind: what the registry holds, used in messages ("task", "strategy", "loss").
        option: the config field or CLI option users set it with (for error messages).
    """

    def __init__(self, kind: str, option: str) -> None:
        self.kind = kind
        self.option = option
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Register under ``name``; ``aliases`` are accepted spellings that resolve to it silently."""

        def decorator(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._items or key in self._aliases:
                    raise ValueError(f"{self.kind} '{key}' is registered twice")
            self._items[name] = obj
            self._aliases.update({alias: name for alias in aliases})
            return obj

        return decorator

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases (unknown names raise)."""
        self.get(name)
        return self._aliases.get(name, name)

    def get(self, name: str) -> T:
        try:
            return self._items[self._aliases.get(name, name)]
        except KeyError:
            raise TunewiseError(
                f"{self.option}: unknown {self.kind} '{name}'{did_you_mean(name, self._items)}; "
                f"choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))
