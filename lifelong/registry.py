"""Name -> factory tables for every pluggable part, so one config key swaps a part."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Entry:
    """A registered part: its factory, its config dataclass (if any) and a one-line summary."""

    name: str
    factory: Callable[..., Any]
    config: type | None
    summary: str


class Registry:
    """A table of named parts of one kind (agents, memory modules, env backends, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, config: type | None = None, summary: str = "") -> Callable:
        """Decorator registering ``factory`` under ``name``; ``config`` is its settings dataclass."""

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            doc = summary or (factory.__doc__ or "").strip().splitlines()[0:1]
            text = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._entries[name] = Entry(name, factory, config, text)
            return factory

        return decorator

    def get(self, name: str, key: str = "name") -> Entry:
        """The entry called ``name``; unknown names raise a one-line error listing the choices."""
        load_builtins()
        if name not in self._entries:
            raise KeyError(unknown_choice_message(key, name, self.names()))
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        load_builtins()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        """Every registered entry, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: str) -> bool:
        load_builtins()
        return name in self._entries


def unknown_choice_message(key: str, value: Any, allowed: list[str]) -> str:
    """One line: the key, the bad value, the closest valid choice and every allowed value."""
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{key}: unknown value {value!r}{hint} (allowed: {', '.join(allowed)})"


AGENTS = Registry("agent")
MEMORY = Registry("memory")
ENV_BACKENDS = Registry("env backend")
TEACHERS = Registry("teacher")
WORLD_MODELS = Registry("world model")

REGISTRIES: dict[str, Registry] = {
    "agents": AGENTS,
    "memory": MEMORY,
    "envs": ENV_BACKENDS,
    "teachers": TEACHERS,
    "world_models": WORLD_MODELS,
}

# Modules whose import registers the built-in parts.
_BUILTIN_MODULES = (
    "lifelong.envs.backends",
    "lifelong.envs.native",
    "lifelong.memory",
    "lifelong.agents",
    "lifelong.world_models",
    "lifelong.curricula",
)
_loaded = False


def load_builtins() -> None:
    """Import the modules that register built-in parts (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the modules below call back into the registries while importing
    try:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
    except BaseException:
        _loaded = False
        raise
