"""Plugin manager: built-in restorers and entry-point plugins, registered through one hook.

Each plugin is loaded and called on its own, so a broken plugin (import error, bad restorer,
exception in its hook) becomes a warning naming it and every other restorer still loads.
``NAPARI_DIFFIR_LOAD_PLUGINS`` limits which entry-point plugins load: unset loads all, an empty
string loads none, ``a,b`` loads only the distributions or entry points named ``a`` and ``b``.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .restorer import Restorer, RestorerInfo

ENTRY_POINT_GROUP = "napari_diffir"

DEFAULT_PLUGINS = (
    "napari_diffir.restorers.bundled",
    "napari_diffir.restorers.diffir",
    "napari_diffir.restorers.srdiff",
    "napari_diffir.restorers.baselines",
    "napari_diffir.restorers.bioimageio",
    "napari_diffir.restorers.user",
)

__all__ = ["RestorerStartError", "UnknownRestorerError", "get_restorer", "list_restorers", "plugin_manager"]


class UnknownRestorerError(ValueError):
    """Raised for a restorer name nobody registered."""


class RestorerStartError(ValueError):
    """A registered restorer's constructor failed (the cause is chained)."""


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered something invalid."""


@dataclass(frozen=True)
class _Entry:
    cls: type[Restorer]
    source: str


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_restorers: dict[str, _Entry] | None = None


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)


def _selected(names: set[str]) -> bool:
    wanted = os.environ.get("NAPARI_DIFFIR_LOAD_PLUGINS")
    if wanted is None:
        return True
    allowed = {w.strip() for w in wanted.split(",") if w.strip()}
    return bool(names & allowed)


def plugin_manager() -> pluggy.PluginManager:
    """The plugin manager with built-ins and installed plugins loaded (created once)."""
    global _pm
    with _lock:
        if _pm is not None:
            return _pm
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            try:
                pm.register(importlib.import_module(module_name), name=module_name)
            except Exception as exc:  # a broken built-in must not hide the others
                _warn(f"built-in restorers {module_name!r} failed to load: {exc}")
        for dist, ep in _entry_points():
            label = f"{dist} ({ep.name} = {ep.value})" if dist else ep.value
            if not _selected({dist, ep.name}):
                continue
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
            except Exception as exc:
                _warn(f"napari-diffir plugin {label} failed to load: {type(exc).__name__}: {exc}")
        _pm = pm
        return pm


def _entry_points():
    seen = set()
    for dist in metadata.distributions():
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue
            seen.add(ep.name)
            yield dist.metadata["Name"] or "", ep


def _plugin_label(pm: pluggy.PluginManager, plugin: Any) -> str:
    name = pm.get_name(plugin) or repr(plugin)
    if name.startswith("napari_diffir.") and getattr(plugin, "PLUGIN_LABEL", None):
        return plugin.PLUGIN_LABEL  # a built-in that registers the user's own models
    if name.startswith("napari_diffir."):
        return "napari-diffir (built-in)"
    for p, dist in pm.list_plugin_distinfo():
        if p is plugin:
            return f"{dist.project_name} {dist.version}"
    for dist, ep in _entry_points():
        if ep.name == name:
            try:
                return f"{dist} {metadata.version(dist)}"
            except metadata.PackageNotFoundError:
                return dist
    return name


def _collect() -> dict[str, _Entry]:
    pm = plugin_manager()
    found: dict[str, _Entry] = {}
    for impl in pm.hook.register_restorers.get_hookimpls():  # registration order: built-ins first
        source = _plugin_label(pm, impl.plugin)

        def register(cls: Any, _source: str = source) -> None:
            info = getattr(cls, "info", None)
            if not (isinstance(cls, type) and issubclass(cls, Restorer)) or not isinstance(
                info, RestorerInfo
            ):
                _warn(
                    f"plugin {_source} registered {cls!r}, which is not a Restorer subclass "
                    "with a RestorerInfo 'info' attribute; ignored"
                )
                return
            if info.name in found:
                _warn(
                    f"plugin {_source} registered restorer {info.name!r}, already registered by "
                    f"{found[info.name].source}; the second one is ignored"
                )
                return
            found[info.name] = _Entry(cls, _source)

        try:
            impl.function(register=register)
        except Exception as exc:
            _warn(f"plugin {source} failed while registering restorers: {type(exc).__name__}: {exc}")
    return found


def _registry() -> dict[str, _Entry]:
    global _restorers
    with _lock:
        if _restorers is None:
            _restorers = _collect()
        return _restorers


def reload() -> None:
    """Forget the loaded plugins (used after installing a plugin in a running session)."""
    global _pm, _restorers
    with _lock:
        _pm = None
        _restorers = None


def list_restorers() -> list[RestorerInfo]:
    """Information on every registered restorer, bundled models first, then by task and name."""
    entries = sorted(_registry().values(), key=lambda e: (not _ships_weights(e), e.cls.info.task, e.cls.info.name))
    return [e.cls.info.replace(source=e.source) for e in entries]


def _ships_weights(entry: _Entry) -> bool:
    """Bundled models: built-in restorers that declare bundled weights."""
    return entry.source == "napari-diffir (built-in)" and entry.cls.info.bundled_weights is not None


def restorer_class(name: str) -> type[Restorer]:
    entries = _registry()
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise UnknownRestorerError(f"Unknown restorer {name!r}; registered restorers: {known}")
    return entries[name].cls


def get_restorer(name: str, **options: Any) -> Restorer:
    """Build the restorer registered as ``name`` with the given options (validated by name)."""
    cls = restorer_class(name)
    info = cls.info
    valid = {o.name: o for o in info.options}
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if key == "weights":
            if info.weights_policy == "none" and value is not None:
                raise ValueError(f"Restorer {name!r} takes no weights; leave weights unset")
            clean[key] = value
            continue
        if key not in valid:
            names = ", ".join(["weights", *valid]) or "none"
            raise ValueError(f"Restorer {name!r} has no option {key!r}; valid options: {names}")
        clean[key] = valid[key].validate(value)
    source = _registry()[name].source
    try:
        restorer = cls(**clean)
    except (ValueError, OSError):  # the restorer's own message (a bad checkpoint, a missing file)
        raise
    except Exception as exc:  # a plugin's bug must not look like ours, nor hang a frontend
        raise RestorerStartError(
            f"Restorer {name!r} ({source}) failed to start: {type(exc).__name__}: {exc}") from exc
    if not isinstance(getattr(restorer, "info", None), RestorerInfo):
        raise RestorerStartError(f"Restorer {name!r} ({source}) has no RestorerInfo after construction; "
                                 "its __init__ must call super().__init__(**options)")
    restorer.info = restorer.info.replace(source=source)
    return restorer
