"""One mechanism behind every extension point: a plain name -> object dict, filled through an
entry-point group whose functions receive the registry's ``register``. Built-ins arrive the
same way (their entry points are declared in SmolQL's own ``pyproject.toml``).

>>> from smolql.errors import QueryError
>>> class Thing:
...     def __init__(self, name): self.name = name
>>> things = Registry("smolql.example_things", "thing", QueryError)
>>> _ = things.register(Thing("a"))
>>> sorted(things.all())
['a']
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Generic, TypeVar

from smolql import changes
from smolql.errors import SmolQLError
from smolql.suggest import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects with a ``name``, by name; the entry-point group loads once per process,
    whichever thread asks first, and a plugin that fails to import is named once."""

    def __init__(
        self,
        group: str,
        kind: str,
        error: type[SmolQLError],
        prepare: Callable[[T], T] | None = None,
    ) -> None:
        self.group, self.kind, self.error = group, kind, error
        self.prepare = prepare  # applied to every item as it is registered
        self._items: dict[str, T] = {}
        self._view = MappingProxyType(self._items)
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under its name; a second one of that name is an error unless
        ``replace``."""
        name = item.name  # type: ignore[attr-defined]
        if name in self._items and not replace:
            raise self.error(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = self.prepare(item) if self.prepare else item
        changes.bump()  # a statement planned before may now mean another function or model
        return item

    def put(self, item: T) -> T:
        """Replace an item as given (no ``prepare``): an explicit change by the user."""
        self._items[item.name] = item  # type: ignore[attr-defined]
        changes.bump()
        return item

    def all(self) -> Mapping[str, T]:
        """A read-only view (no copy: sources are looked up for every image read)."""
        self._load()
        return self._view

    def get(self, name: str) -> T:
        items = self.all()
        if name not in items:
            raise self.error(f"unknown {self.kind} {name!r}{did_you_mean(name, items)}")
        return items[name]

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            try:
                for ep in entry_points(group=self.group):
                    plugin = self._plugin(ep)
                    plugin(self.register)
            finally:
                self._loaded = True  # a broken plugin is reported once; the rest stay usable

    def _plugin(self, ep) -> Callable:
        try:
            return ep.load()
        except ImportError as e:
            message = f"{self.kind} plugin {ep.name!r} ({ep.value}) failed to import: {e}"
            raise self.error(message) from e
