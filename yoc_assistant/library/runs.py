"""Training runs and derived-data caches of the `Library` (a mixin to keep modules short)."""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yoc_assistant.errors import NotFoundError, UserInputError
from yoc_assistant.library import paths
from yoc_assistant.library.models import RUN_STATUSES, TrainingRun, dumps, now

if TYPE_CHECKING:
    from yoc_assistant.library.core import Library

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RunsAndCachesMixin:
    # --- training runs -----------------------------------------------------------

    def start_run(self: Library, name: str, config: dict[str, Any] | None = None,
                  total_steps: int | None = None) -> int:
        """Record a new training run (status 'running') and mark the concept 'training'.

        One run per concept at a time (two would share its checkpoints folder): refused with
        a message while another live process trains it."""
        with self.transaction():
            concept = self.require_concept(name)
            live = self.live_run(concept.id)
            if live is not None:
                raise UserInputError(f"{concept.name!r} is already training ({_who(live)}); wait for it to "
                                     f"finish, or stop it (Ctrl-C) and continue with "
                                     f"`yoc train {concept.name} --resume`")
            cur = self.db.execute(
                "INSERT INTO training_runs (concept_id, config, status, step, total_steps, pid, host, started) "
                "VALUES (?, ?, 'running', 0, ?, ?, ?, ?)",
                [concept.id, dumps(config or {}), total_steps, os.getpid(), socket.gethostname(), now()])
            self._update_fields(concept.id, status="training")
            return int(cur.lastrowid)

    def update_run(self: Library, run_id: int, *, step: int | None = None, loss: float | None = None,
                   metrics: dict[str, Any] | None = None, checkpoint_path: str | os.PathLike[str] | None = None,
                   total_steps: int | None = None) -> None:
        """Progress of a run. A checkpoint must be completely written before it is recorded here."""
        values: dict[str, Any] = {"step": step, "loss": loss, "total_steps": total_steps,
                                  "metrics": dumps(metrics) if metrics is not None else None}
        if checkpoint_path is not None:
            values["checkpoint_path"] = self._rel(Path(checkpoint_path))
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return
        with self.transaction():
            self._require_run(run_id)
            self.db["training_runs"].update(run_id, values)

    def finish_run(self: Library, run_id: int, status: str = "done", metrics: dict[str, Any] | None = None,
                   error: str | None = None) -> None:
        """End a run. A failed run marks the concept 'failed' unless it already has vectors."""
        if status not in RUN_STATUSES or status == "running":
            raise ValueError(f"a finished run's status is done, failed or interrupted, not {status!r}")
        with self.transaction():
            run = self._require_run(run_id)
            values: dict[str, Any] = {"status": status, "finished": now(), "error": error}
            if metrics is not None:
                values["metrics"] = dumps(metrics)
            self.db["training_runs"].update(run_id, values)
            row = self.db.execute("SELECT status, vectors_path FROM concepts WHERE id = ?",
                                  [run.concept_id]).fetchone()
            if row is not None and row[0] == "training":
                # The concept is ready only once set_vectors() pointed it at a file.
                new_status = "ready" if row[1] else ("failed" if status == "failed" else "new")
                self._update_fields(run.concept_id, status=new_status)

    def recover_stale_runs(self: Library) -> int:
        """Mark runs whose process died (killed, crashed) on this machine 'interrupted'.

        Their concepts go back from 'training' to 'ready' (if they have vectors) or
        'new', so that they can be re-added or retrained. Returns how many.
        """
        host = socket.gethostname()
        rows = self.db.execute("SELECT id, pid FROM training_runs WHERE status = 'running' AND host = ?",
                               [host]).fetchall()
        dead = [run_id for run_id, pid in rows if pid is not None and not _alive(pid)]
        for run_id in dead:
            with self.transaction():
                row = self.db.execute("SELECT status FROM training_runs WHERE id = ?", [run_id]).fetchone()
                if row is not None and row[0] == "running":  # else another process recovered it first
                    self.finish_run(run_id, "interrupted", error="the training process ended without finishing")
        return len(dead)

    def live_run(self: Library, concept_id: int) -> dict[str, Any] | None:
        """The concept's running training run whose process is alive (or on another machine,
        where it cannot be checked), else None. Runs of dead processes on this machine are
        marked interrupted on the way (call under the write lock)."""
        host = socket.gethostname()
        rows = self.db.execute("SELECT id, pid, host FROM training_runs WHERE concept_id = ? AND status = 'running'",
                               [concept_id]).fetchall()
        for run_id, pid, run_host in rows:
            if run_host == host and (pid is None or not _alive(pid)):
                self.finish_run(run_id, "interrupted", error="the training process ended without finishing")
                continue
            return {"id": run_id, "pid": pid, "host": run_host}
        return None

    def refuse_while_training(self: Library, concept: Any, doing: str) -> None:
        """UserInputError if a live run trains `concept` (call under the write lock)."""
        live = self.live_run(concept.id)
        if live is not None:
            raise UserInputError(f"cannot {doing} {concept.name!r}: it is training ({_who(live)}); wait for "
                                 "the run to finish, or stop it (Ctrl-C) first")

    def _require_run(self: Library, run_id: int) -> TrainingRun:
        rows = list(self.db.query("SELECT * FROM training_runs WHERE id = ?", [run_id]))
        if not rows:
            raise NotFoundError(f"no training run with id {run_id}")
        return self._run(rows[0])

    def get_run(self: Library, run_id: int) -> TrainingRun | None:
        rows = list(self.db.query("SELECT * FROM training_runs WHERE id = ?", [run_id]))
        return self._run(rows[0]) if rows else None

    def latest_run(self: Library, name: str) -> TrainingRun | None:
        concept = self.require_concept(name)
        rows = list(self.db.query(
            "SELECT * FROM training_runs WHERE concept_id = ? ORDER BY id DESC LIMIT 1", [concept.id]))
        return self._run(rows[0]) if rows else None

    def runs(self: Library, name: str) -> list[TrainingRun]:
        return list(self.iter_runs(name))

    # --- caches --------------------------------------------------------------------

    def cache_path(self: Library, kind: str, key: str, model: str, suffix: str = ".safetensors") -> Path:
        """Where to write a cache entry (write it atomically, then cache_put)."""
        model_slug = _SAFE.sub("_", model)[-40:] + "-" + hashlib.sha256(model.encode()).hexdigest()[:8]
        key_slug = _SAFE.sub("_", key)
        return paths.cache_dir(self.home) / _SAFE.sub("_", kind) / model_slug / key_slug[:2] / f"{key_slug}{suffix}"

    def cache_get(self: Library, kind: str, key: str, model: str) -> Path | None:
        row = self.db.execute("SELECT path FROM caches WHERE kind = ? AND key = ? AND model = ?",
                              [kind, key, model]).fetchone()
        if row is None:
            return None
        path = self._abs(row[0])
        if path is None or not path.is_file():
            with self.transaction():  # file lost (cleaned by hand): forget the entry
                self.db.execute("DELETE FROM caches WHERE kind = ? AND key = ? AND model = ?", [kind, key, model])
            return None
        return path

    def cache_get_many(self: Library, kind: str, keys: Iterable[str], model: str) -> dict[str, Path]:
        """{key: path} for the keys cached (one query per 500 keys); entries whose file is gone are dropped."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Path] = {}
        lost: list[str] = []
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, path FROM caches WHERE kind = ? AND model = ? AND key IN ({marks})",
                [kind, model, *chunk]).fetchall()
            exists: dict[str, bool] = {}
            for key, stored in rows:
                path = self._abs(stored)
                if path is not None and exists.setdefault(str(path), path.is_file()):
                    found[key] = path
                else:
                    lost.append(key)
        if lost:
            with self.transaction():
                for key in lost:
                    self.db.execute("DELETE FROM caches WHERE kind = ? AND key = ? AND model = ?", [kind, key, model])
        return found

    def cache_put_many(self: Library, kind: str, entries: Mapping[str, str | os.PathLike[str]], model: str) -> None:
        """Record many entries in one transaction (several keys may share one file)."""
        checked: dict[Path, str] = {}
        rows = []
        for key, raw in entries.items():
            path = Path(raw)
            if path not in checked:
                if not path.is_file():
                    raise NotFoundError(f"cache file {path} does not exist; write it before cache_put_many")
                checked[path] = self._rel(path)
            rows.append([kind, key, model, checked[path], now()])
        with self.transaction():
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO caches (kind, key, model, path, created) VALUES (?, ?, ?, ?, ?)", rows)

    def cache_put(self: Library, kind: str, key: str, model: str, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        if not path.is_file():
            raise NotFoundError(f"cache file {path} does not exist; write it before cache_put")
        with self.transaction():
            self.db.execute(
                "INSERT OR REPLACE INTO caches (kind, key, model, path, created) VALUES (?, ?, ?, ?, ?)",
                [kind, key, model, self._rel(path), now()])

    def cache_clear(self: Library, kind: str | None = None, model: str | None = None) -> int:
        """Forget cache entries (and delete their files). Returns how many."""
        where, args = [], []
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        if model is not None:
            where.append("model = ?")
            args.append(model)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self.transaction():
            victims = [self._abs(r["path"]) for r in self.db.query(f"SELECT path FROM caches{clause}", args)]
            self.db.execute(f"DELETE FROM caches{clause}", args)
        for path in victims:
            if path is not None and self._inside_home(path):
                path.unlink(missing_ok=True)
        return len(victims)


def _who(live: dict[str, Any]) -> str:
    where = "" if live["host"] == socket.gethostname() else f" on {live['host']}"
    return f"run #{live['id']}, process {live['pid']}{where}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True
