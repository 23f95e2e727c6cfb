"""packaging/build_wheels.py builds wheels of the core and of each plugin that carry
the package data (pyproject's package-data patterns, nested folders included) and
the entry points. Built from a copy of the repository with probe files added."""

from __future__ import annotations

import configparser
import fnmatch
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "packaging" / "build_wheels.py"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
PROBES = ("yoc_assistant/tui/probe-style.tcss", "yoc_assistant/probe-data.json",
          "yoc_assistant/toyworld/weights/probe/probe.safetensors")


def _copy_repo(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "yoc_assistant", dest / "yoc_assistant", ignore=IGNORE)
    shutil.copytree(ROOT / "plugins", dest / "plugins", ignore=IGNORE)
    shutil.copytree(ROOT / "concepts", dest / "concepts", ignore=IGNORE)
    for probe in PROBES:
        (dest / probe).parent.mkdir(parents=True, exist_ok=True)
        (dest / probe).write_bytes(b"probe")
    return dest


def _data_patterns() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(config["tool"]["setuptools"]["package-data"]["*"])


def _entry_points(wheel: zipfile.ZipFile) -> configparser.ConfigParser:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    parser = configparser.ConfigParser()
    parser.read_string(wheel.read(name).decode())
    return parser


def test_wheels_carry_package_data_and_entry_points(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path / "repo")
    out = tmp_path / "dist"
    done = subprocess.run([sys.executable, str(SCRIPT), "--root", str(repo), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    wheels = {Path(line).name.split("-")[0]: Path(line) for line in done.stdout.split()}
    assert set(wheels) == {"yoc_assistant", "yoc_text", "yoc_image"}
    assert not (repo / "build").exists() and not list(repo.glob("*.egg-info"))  # staged build

    with zipfile.ZipFile(wheels["yoc_assistant"]) as core:
        names = set(core.namelist())
        patterns = _data_patterns()
        source = repo / "yoc_assistant"
        expected = [p.relative_to(repo).as_posix() for p in source.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts
                    and (p.suffix == ".py" or any(fnmatch.fnmatch(p.name, pat) for pat in patterns))]
        missing = sorted(set(expected) - names)
        assert not missing, f"files missing from the core wheel: {missing}"
        assert set(PROBES) <= names
        # The example concept travels inside the package, where an installed `yoc demo` looks.
        for photo in (repo / "concepts").rglob("*.png"):
            inside = "yoc_assistant/toyworld/concepts/" + photo.relative_to(repo / "concepts").as_posix()
            assert inside in names, inside
        assert "yoc_assistant/toyworld/concepts/sunny/about.txt" in names
        assert _entry_points(core)["console_scripts"]["yoc"] == "yoc_assistant.cli:main"

    for plugin, module in (("yoc_text", "yoc_text"), ("yoc_image", "yoc_image")):
        with zipfile.ZipFile(wheels[plugin]) as wheel:
            assert f"{module}/__init__.py" in wheel.namelist()
            modality = plugin.removeprefix("yoc_")
            assert _entry_points(wheel)["yoc"][modality] == module
            (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
            assert "Requires-Dist: yoc-assistant" in wheel.read(meta).decode()


BUILD_HOOK = ("import sys, setuptools.build_meta as backend; "
              "getattr(backend, sys.argv[1])(sys.argv[2])")


def test_install_prints_no_setuptools_warnings(tmp_path: Path) -> None:
    """`make setup` installs the core and the plugins editable; setuptools must have
    nothing to warn about (a license table, an odd layout)."""
    repo = _copy_repo(tmp_path / "repo")
    for project in (repo, repo / "plugins" / "yoc-text", repo / "plugins" / "yoc-image"):
        for hook in ("build_editable", "build_wheel"):
            out = tmp_path / f"{project.name}-{hook}"
            done = subprocess.run([sys.executable, "-W", "always", "-c", BUILD_HOOK, hook, str(out)],
                                  cwd=project, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            said = done.stdout + done.stderr
            for word in ("Warning", "deprecated", "careful"):
                assert word not in said, f"{project.name} {hook}: {said[-3000:]}"
