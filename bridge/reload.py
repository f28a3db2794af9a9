"""Reloading ``FLOWBRIDGE_BLUEPRINTS`` in a running bridge when its files change.

Only the bridge needs blueprints by name (it creates runs); a run carries the
snapshot it started with, so workers never need a reload, and a changed file
never changes a run in flight. The bridge polls the files' modification times
every ``FLOWBRIDGE_BLUEPRINTS_RELOAD_S`` from its consumer loop (the thread that
reads the registry, so no lock is needed) and logs each blueprint added,
changed or removed. A file that became invalid is logged with every problem
and its previous version stays registered until the file is fixed. Node code is
not reloaded: a blueprint whose ``uses`` the bridge has not registered is
invalid, as at start-up. Why polling and not a push command: docs/blueprints.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from tasks.blueprint.loader import blueprint_files, file_problems, load_file
from tasks.errors import BlueprintError
from tasks.registry import BlueprintRegistry

__all__ = ["BlueprintWatcher"]

log = logging.getLogger("flowbridge.blueprints")

#: What identifies one version of a file's contents: (mtime in ns, size).
Stamp = tuple[int, int]


class BlueprintWatcher:
    """Keeps a registry in step with the blueprint files of some directories."""

    def __init__(
        self,
        *,
        registry: BlueprintRegistry,
        directories: Iterable[str | Path],
        known_uses: Callable[[], Collection[str]],
        max_delay_s: float | None,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Watch ``directories``; the registry already holds what they had at start-up."""
        self.registry = registry
        self.directories = [Path(d) for d in directories]
        self.known_uses = known_uses
        self.max_delay_s = max_delay_s
        self.interval_s = interval_s
        self._clock = clock
        self._next = clock() + interval_s
        self._stamps = self._scan()
        #: Which blueprint (id, version) each file registered.
        self._origin: dict[Path, tuple[str, str]] = {}
        for path in self._stamps:
            try:
                bp = load_file(path, validate=False)
            except BlueprintError:
                continue
            self._origin[path] = (bp.id, bp.version)

    def poll(self) -> None:
        """Reload if the interval has passed (called on every turn of the consumer loop)."""
        if self.interval_s <= 0 or self._clock() < self._next:
            return
        self._next = self._clock() + self.interval_s
        self.reload()

    def reload(self) -> list[str]:
        """Apply what changed on disk since the last look; returns what it did, as logged."""
        now = self._scan()
        done: list[str] = []
        for path in sorted(self._stamps.keys() - now.keys()):
            done.append(self._removed(path))
        for path in sorted(now):
            if self._stamps.get(path) != now[path]:
                done.append(self._load(path, new=path not in self._stamps))
        # Invalid files are remembered too: they are reported again only when they change.
        self._stamps = now
        return done

    def _scan(self) -> dict[Path, Stamp]:
        stamps: dict[Path, Stamp] = {}
        for directory in self.directories:
            try:
                files = blueprint_files(directory)
            except OSError:
                continue  # a directory removed while running: as if empty
            for path in files:
                try:
                    st = path.stat()
                except OSError:
                    continue
                stamps[path] = (st.st_mtime_ns, st.st_size)
        return stamps

    def _removed(self, path: Path) -> str:
        key = self._origin.pop(path, None)
        if key is None:
            return self._say(logging.INFO, f"{path} removed (it had not been loaded)")
        self.registry.remove(*key)
        return self._say(logging.INFO, f"blueprint {key[0]}@{key[1]} removed ({path} is gone)")

    def _load(self, path: Path, *, new: bool) -> str:
        kept = "not loaded" if path not in self._origin else "keeping the previous version"
        bp, problems = file_problems(
            path, known_uses=self.known_uses(), max_delay_s=self.max_delay_s
        )
        if problems or bp is None:
            listed = "".join(f"\n  - {p}" for p in problems)
            return self._say(logging.ERROR, f"{path}: invalid blueprint ({kept}):{listed}")
        key = (bp.id, bp.version)
        twin = next((p for p, k in self._origin.items() if k == key and p != path), None)
        if twin is not None:
            return self._say(
                logging.ERROR,
                f"{path}: blueprint {bp.id}@{bp.version} is also defined in {twin} ({kept})",
            )
        old_key = self._origin.get(path)
        existing = self.registry.find(*key)
        if old_key != key and existing is not None and existing != bp:
            return self._say(
                logging.ERROR,
                f"{path}: blueprint {bp.id}@{bp.version} is registered in code with other "
                f"contents ({kept}); bump metadata.version",
            )
        if old_key is not None and old_key != key:
            self.registry.remove(*old_key)
        self.registry.replace(bp)
        self._origin[path] = key
        if new or old_key is None:
            what = "added"
        elif old_key == key:
            what = "changed"
        else:
            what = f"changed (was {old_key[0]}@{old_key[1]})"
        return self._say(logging.INFO, f"blueprint {bp.id}@{bp.version} {what} ({path})")

    @staticmethod
    def _say(level: int, message: str) -> str:
        log.log(level, "%s", message)
        return message
