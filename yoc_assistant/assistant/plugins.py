"""Finding and loading plugins: pluggy, entry-point group `yoc`.

First-party modalities (plugins/yoc-text, plugins/yoc-image) are found exactly
like third-party ones. A plugin that fails to import, register or answer the
hook is recorded as a `PluginFailure` and skipped; yoc never crashes on it.
`YOC_LOAD_PLUGINS` (comma-separated entry-point names; empty = none) selects
which plugins load; unset loads all.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import Any

import pluggy

from yoc_assistant import settings
from yoc_assistant.assistant import hookspecs
from yoc_assistant.assistant.modality import Modality, validation_problem
from yoc_assistant.errors import UserInputError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "yoc"
# yoc's own modality packages (distribution names): they win every tie with a third-party
# plugin (an entry point of the same name, a modality name or token group), so installing
# something can never silently replace the built-in text or image modality.
FIRST_PARTY = frozenset({"yoc-text", "yoc-image"})
SELECT_ENV = settings.PLUGINS_VARIABLE


@dataclass
class PluginFailure:
    name: str
    reason: str


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    modalities: list[Modality] = field(default_factory=list)


class PluginManager:
    """Wraps a pluggy PluginManager; `failures` lists what was skipped and why."""

    def __init__(self, *, load: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self._dists: dict[str, tuple[str | None, str | None]] = {}
        self._modalities: list[Modality] | None = None
        self._by_plugin: dict[str, list[Modality]] = {}
        if load:
            self.load_entry_points()

    # -- loading -----------------------------------------------------------------
    def load_entry_points(self) -> int:
        """Import and register every selected entry point of the `yoc` group: first-party
        packages first, then the others by name; a name taken already is reported."""
        wanted = settings.selected_plugins()
        seen: dict[str, str] = {}  # entry-point name -> the package that has it
        count = 0
        for dist, ep in _entry_points():
            dist_name = _dist_name(dist)
            if ep.name in seen:
                if seen[ep.name] != dist_name:
                    self._fail(ep.name, f"package {dist_name} has an entry point {ep.name!r} too; it is "
                                        f"skipped, package {seen[ep.name]} keeps the name")
                continue
            seen[ep.name] = dist_name
            if wanted is not None and ep.name not in wanted:
                continue
            count += self._load_one(ep, dist)
        for name in sorted((wanted or set()) - set(seen)):
            self._fail(name, f"selected by {SELECT_ENV} but no installed package has a "
                             f"'{ENTRY_POINT_GROUP}' entry point of that name")
        return count

    def _load_one(self, ep: importlib.metadata.EntryPoint,
                  dist: importlib.metadata.Distribution) -> int:
        try:
            plugin = ep.load()
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # noqa: BLE001 - even sys.exit() at import must not end yoc
            self._fail(ep.name, f"failed to import {ep.value}: {type(err).__name__}: {err}")
            return 0
        meta = dist.metadata
        return self.register(plugin, ep.name, distribution=meta["Name"] if meta else None,
                             version=dist.version)

    def register(self, plugin: Any, name: str, *, distribution: str | None = None,
                 version: str | None = None) -> int:
        """Register a plugin object; returns 1, or 0 (and records a failure) if it is refused."""
        if self.pm.has_plugin(name):
            self._fail(name, "a plugin of this name is already registered")
            return 0
        try:
            self.pm.register(plugin, name=name)
        except Exception as err:  # noqa: BLE001
            self._fail(name, f"failed to register: {type(err).__name__}: {err}")
            return 0
        self._dists[name] = (distribution, version)
        self._modalities = None
        return 1

    def _owner(self, plugin_name: str) -> str:
        kind = "first-party plugin" if self.is_first_party(plugin_name) else "plugin"
        return f"{kind} {plugin_name!r} (skipped: first-party plugins win, then the first by name)"

    def is_first_party(self, plugin_name: str) -> bool:
        return self._dists.get(plugin_name, (None, None))[0] in FIRST_PARTY

    def _fail(self, name: str, reason: str) -> None:
        log.warning("plugin %s: %s (skipped)", name, reason)
        self.failures.append(PluginFailure(name, reason))

    # -- modalities --------------------------------------------------------------
    def get_modalities(self) -> list[Modality]:
        """Every valid modality of every registered plugin (names and groups unique).

        Invalid ones, clashes and hooks that raise are recorded in `failures`."""
        if self._modalities is None:
            self._collect()
        return list(self._modalities or [])

    def _collect(self) -> None:
        names: dict[str, str] = {}
        groups: dict[str, str] = {}
        self._modalities, self._by_plugin = [], {}
        impls = sorted(self.pm.hook.yoc_modalities.get_hookimpls(),
                       key=lambda impl: (not self.is_first_party(impl.plugin_name), impl.plugin_name))
        for impl in impls:
            plugin_name = impl.plugin_name
            try:
                found = list(impl.function() or [])
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # noqa: BLE001
                self._fail(plugin_name, f"yoc_modalities() raised {type(err).__name__}: {err}")
                continue
            kept = self._by_plugin.setdefault(plugin_name, [])
            for modality in found:
                problem = validation_problem(modality)
                if problem is None and modality.name in names:
                    problem = (f"modality name {modality.name!r} is already registered by "
                               f"{self._owner(names[modality.name])}")
                if problem is None and modality.group in groups:
                    problem = (f"token group {modality.group!r} is already owned by "
                               f"{self._owner(groups[modality.group])}")
                if problem is not None:
                    self._fail(plugin_name, problem)
                    continue
                names[modality.name] = groups[modality.group] = plugin_name
                kept.append(modality)
                self._modalities.append(modality)

    def modality(self, name: str) -> Modality:
        """The modality called `name`, else the first whose `aliases` hold it."""
        for modality in self.get_modalities():
            if modality.name == name:
                return modality
        for modality in self.get_modalities():
            if name in modality.aliases:
                return modality
        known = ", ".join(m.name for m in self.get_modalities()) or "none (no plugins loaded)"
        raise UserInputError(f"unknown mode {name!r}; available modalities: {known}")

    def plugins(self) -> list[PluginInfo]:
        """Registered plugins with their valid modalities, sorted by name."""
        self.get_modalities()
        infos = []
        for name, _plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            dist, version = self._dists.get(name, (None, None))
            infos.append(PluginInfo(name, dist, version, list(self._by_plugin.get(name, []))))
        return infos

    def group_sizes(self) -> dict[str, int]:
        """Token groups every new concept gets: group name -> size."""
        return {m.group: m.group_size for m in self.get_modalities()}

    def commands(self) -> list[tuple[str, Any]]:
        """(plugin name, command) for every object plugins return from `yoc_commands()`, in
        plugin order (first-party first, then by name). The command line checks that each is
        a click command with a free name; a hook that raises is recorded in `failures`."""
        out: list[tuple[str, Any]] = []
        impls = sorted(self.pm.hook.yoc_commands.get_hookimpls(),
                       key=lambda impl: (not self.is_first_party(impl.plugin_name), impl.plugin_name))
        for impl in impls:
            try:
                found = list(impl.function() or [])
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # noqa: BLE001
                self._fail(impl.plugin_name, f"yoc_commands() raised {type(err).__name__}: {err}")
                continue
            out += [(impl.plugin_name, command) for command in found]
        return out


def _dist_name(dist: importlib.metadata.Distribution) -> str:
    meta = dist.metadata
    return (meta["Name"] if meta and meta["Name"] else None) or "an unnamed package"


def _entry_points() -> list[tuple[importlib.metadata.Distribution, importlib.metadata.EntryPoint]]:
    """(package, entry point) of the `yoc` group, first-party packages first, then by name;
    a package found twice on the path (same name and target) counts once."""
    found: dict[tuple[str, str, str], tuple[importlib.metadata.Distribution, importlib.metadata.EntryPoint]] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP:
                found.setdefault((_dist_name(dist), ep.name, ep.value), (dist, ep))
    return sorted(found.values(),
                  key=lambda pair: (_dist_name(pair[0]) not in FIRST_PARTY, _dist_name(pair[0]), pair[1].name))
