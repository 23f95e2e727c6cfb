"""Several processes writing to one library at once never fail with "database is locked"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from library_images import photos

from yoc_assistant.library import Library

WORKER = r"""
import sys, time
from pathlib import Path
from yoc_assistant.library import Library
from yoc_assistant.library.concepts import add_concept_from_paths

home, me, photo_dir, go, rounds = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
while not go.exists():
    time.sleep(0.005)
lib = Library.open(home)  # all start on a database that does not exist yet: migrations race too
files = sorted(photo_dir.iterdir())
for i in range(rounds):
    name = f"{me}-{i}"
    add_concept_from_paths(lib, files[:3], name, about=f"round {i}")   # photos shared by every worker
    lib.add_images(name, files[3:5], role="negative")
    run = lib.start_run(name, {"round": i}, total_steps=3)
    for step in range(3):
        lib.update_run(run, step=step + 1, loss=1.0 / (step + 1))
    lib.finish_run(run, "done")
    lib.add_pool_images(files[5:])
    cache = lib.cache_path("clip", f"{me}-{i}", "m")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(b"x")
    lib.cache_put("clip", f"{me}-{i}", "m", cache)
    if i % 2:
        lib.remove(name)   # drops photos only when no other worker's concept uses them
print("ok")
"""


def test_parallel_writers(tmp_path: Path) -> None:
    photo_dir = tmp_path / "photos"
    photos(photo_dir, 7)
    home, go = tmp_path / "home", tmp_path / "go"
    workers, rounds = 3, 6
    env = {**os.environ, "YOC_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(home), f"w{k}", str(photo_dir), str(go),
                               str(rounds)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(workers)]
    time.sleep(0.5)  # let every worker reach the start line
    go.touch()
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert "locked" not in err.lower(), err
        assert proc.returncode == 0 and out.strip() == "ok", err
    with Library.open(home) as lib:
        names = sorted(c.name for c in lib.list_concepts())
        assert names == sorted(f"w{k}-{i}" for k in range(workers) for i in range(rounds) if i % 2 == 0)
        for name in names:
            assert lib.get_concept(name).photos == 3 and lib.latest_run(name).status == "done"
            assert all(img.path.is_file() for img in lib.concept_images(name))
        assert lib.pool_count() == 2 and all(img.path.is_file() for img in lib.pool_images())
