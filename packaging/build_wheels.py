#!/usr/bin/env python
"""Build the release: a wheel of the core (`yoc-assistant`) and one of each plugin
under plugins/, into dist/ (or --out).

No network and no dependency resolution: `pip wheel --no-deps --no-build-isolation
--no-index` with the setuptools of the running Python. Each project is first
copied into a clean staging folder, so the build never writes build/ or
*.egg-info into the source tree and stale files there never reach a wheel.

    python packaging/build_wheels.py [--out DIR] [--root DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a project folder needs to build; everything else (tests, caches) stays out.
CORE_FILES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in")
CORE_PACKAGE = "yoc_assistant"
# The example concept lives at the top of the repository; an installed yoc finds it
# inside the package (cli/demo.py looks in both places).
EXAMPLES = ("concepts", "toyworld/concepts")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*")


def projects(root: Path) -> list[Path]:
    """The core, then every plugin folder that has a pyproject.toml."""
    plugins = sorted(p.parent for p in (root / "plugins").glob("*/pyproject.toml"))
    return [root, *plugins]


def stage(project: Path, root: Path, into: Path) -> Path:
    """Copy what `project` needs to build into a fresh folder under `into`."""
    target = into / (project.name if project != root else "core")
    if project == root:
        target.mkdir(parents=True)
        for name in CORE_FILES:
            if (root / name).is_file():
                shutil.copy2(root / name, target / name)
        shutil.copytree(root / CORE_PACKAGE, target / CORE_PACKAGE, ignore=IGNORE)
        source, inside = EXAMPLES
        if (root / source).is_dir():
            shutil.copytree(root / source, target / CORE_PACKAGE / inside, ignore=IGNORE)
    else:
        shutil.copytree(project, target, ignore=IGNORE)
    return target


def build_one(source: Path, out: Path) -> Path:
    before = set(out.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "--quiet", "--wheel-dir", str(out), str(source)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"building {source.name} failed:\n{done.stdout}\n{done.stderr}")
    new = sorted(set(out.glob("*.whl")) - before, key=lambda p: p.stat().st_mtime)
    if not new:  # an identical wheel was rebuilt over an existing file
        new = sorted(out.glob("*.whl"), key=lambda p: p.stat().st_mtime)
    return new[-1]


def build_wheels(root: Path = ROOT, out: Path | None = None) -> list[Path]:
    out = (out or root / "dist").resolve()
    out.mkdir(parents=True, exist_ok=True)
    wheels = []
    with tempfile.TemporaryDirectory(prefix="yoc-wheels-") as tmp:
        for project in projects(root):
            wheels.append(build_one(stage(project, root, Path(tmp)), out))
    return wheels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="wheel folder (default: ROOT/dist)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    for wheel in build_wheels(args.root.resolve(), args.out):
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
