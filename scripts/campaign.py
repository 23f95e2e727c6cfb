"""The fault and bad-input campaign (issue 14): try yoc as a hostile user and a clumsy one would,
and print tried / held / failed per category.

Fast cases are the test suite's campaign files (and the older suites that attack the same
parts), run with pytest; a test that passes is a case that held. Slow cases live here:
SIGKILL of training, import and removal at several moments, commands racing each other,
repeatability of a training run, and no network use. Each slow case runs the real `yoc`
in subprocesses on a fresh YOC_HOME with the embedded backbone.

    .venv/bin/python scripts/campaign.py              # everything
    .venv/bin/python scripts/campaign.py --slow-only  # kills, concurrency, ...
    .venv/bin/python scripts/campaign.py --markdown docs/reliability-last-run.md

Exit status 1 when any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"

# category -> the test files whose cases belong to it
FAST: dict[str, list[str]] = {
    "photos": ["test_campaign_photos.py", "test_ingest.py", "test_cli_photos.py"],
    "bundles": ["test_campaign_bundles.py", "test_bundle.py"],
    "library": ["test_campaign_library.py", "test_library_db.py"],
    "terminal": ["test_campaign_terminal.py"],
    "plugins": ["test_campaign_plugins.py", "test_plugins.py"],
    "models": ["test_campaign_models.py"],
    "options": ["test_campaign_options.py", "test_cli_failfast.py"],
    "training": ["test_campaign_training.py"],
}


@dataclass
class Tally:
    tried: int = 0
    held: int = 0
    failed: list[str] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.tried += 1
        if ok:
            self.held += 1
        else:
            self.failed.append(f"{name}: {detail}" if detail else name)


# -- fast cases: pytest -----------------------------------------------------------------------
def run_fast(tallies: dict[str, Tally]) -> None:
    by_file = {f: cat for cat, files in FAST.items() for f in files}
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                        *[str(TESTS / f) for f in by_file]], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        for case in ET.parse(report).getroot().iter("testcase"):
            module = case.get("classname", "").split(".")[-1] + ".py"
            category = by_file.get(module)
            if category is None or case.find("skipped") is not None:
                continue
            bad = case.find("failure") if case.find("failure") is not None else case.find("error")
            detail = (bad.get("message") or "")[:160] if bad is not None else ""
            tallies.setdefault(category, Tally()).add(f"{module}::{case.get('name')}", bad is None, detail)


# -- slow cases: the real command line ----------------------------------------------------------
def _env(home: Path | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", **extra}
    env.pop("YOC_BACKBONE", None)  # the embedded backbone
    if home is not None:
        env["YOC_HOME"] = str(home)
        env["YOC_PICTURES"] = str(home / "pictures")
    return env


def yoc(home: Path, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "yoc_assistant", *args], env=_env(home, **extra),
                          capture_output=True, text=True, timeout=timeout)


def start(home: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "yoc_assistant", *args], env=_env(home, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def make_photos(folder: Path, n: int, start: int = 0) -> Path:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = random.Random(start + i)
        img = Image.new("RGB", (96, 80), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.randrange(96), rng.randrange(80)
            draw.rectangle([x, y, x + rng.randrange(4, 40), y + rng.randrange(4, 40)],
                           fill=tuple(rng.randrange(256) for _ in range(3)))
        img.save(folder / f"photo{i}.png")
    return folder


def new_concept(home: Path, name: str = "bo", n: int = 3) -> None:
    done = yoc(home, "add-concept", str(make_photos(home.parent / f"{name}-photos", n)), "--name", name,
               "--no-train", "--quiet")
    if done.returncode != 0:
        raise RuntimeError(f"add-concept failed: {done.stderr[-300:]}")


def checkpoints(home: Path) -> list[Path]:
    return sorted((home / "runs").glob("*/step-*.safetensors"))


def checkpoint_step(home: Path) -> int:
    """The newest checkpoint's step (the library's row is updated only every few seconds)."""
    steps = [int(p.stem.split("-")[-1]) for p in checkpoints(home) if p.stem.split("-")[-1].isdigit()]
    return max(steps, default=0)


def wait_for(predicate: Callable[[], bool], timeout: float = 240, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return False


def library_consistent(home: Path) -> tuple[bool, str]:
    """Opens, lists, nothing left 'training', every row's files complete."""
    listed = yoc(home, "concepts", "list", "--json")
    if listed.returncode != 0:
        return False, f"concepts list: {listed.stderr[-200:]}"
    items = json.loads(listed.stdout)
    if any(c["status"] in ("training", "broken") for c in items):
        return False, f"statuses after the kill: {[c['status'] for c in items]}"
    return True, ""


SLOW: list[tuple[str, str, Callable[[Path], tuple[bool, str]]]] = []


def case(category: str, name: str) -> Callable[[Callable[[Path], tuple[bool, str]]], Callable]:
    def register(fn: Callable[[Path], tuple[bool, str]]) -> Callable:
        SLOW.append((category, name, fn))
        return fn
    return register


STEPS = "40"


def _kill_training_at(home: Path, step: int) -> tuple[bool, str]:
    new_concept(home)
    proc = start(home, "train", "bo", "--steps", STEPS, "--quiet")
    if not wait_for(lambda: checkpoint_step(home) >= step or proc.poll() is not None, poll=0.005):
        proc.kill()
        return False, "training never reached the step"
    if proc.poll() is not None:
        return False, "training ended before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = checkpoint_step(home)  # the kill may land a little later
    ok, why = library_consistent(home)
    if not ok:
        return ok, why
    resumed = yoc(home, "train", "bo", "--steps", STEPS, "--resume", "--json")
    if resumed.returncode != 0:
        return False, f"--resume failed: {resumed.stderr[-300:]}"
    outcome = json.loads(resumed.stdout)
    lost = step - (outcome["metrics"].get("resumed_from") or 0)
    if outcome["steps"] != int(STEPS) or lost > 1:
        return False, f"resumed from {outcome['metrics'].get('resumed_from')} after a kill at {step}"
    return library_consistent(home)


for _step in (1, 5, 20):
    case("kills", f"SIGKILL train at step {_step}, then --resume")(
        lambda home, s=_step: _kill_training_at(home, s))


@case("kills", "SIGKILL add-concept while it trains, then re-run it")
def _kill_add_concept(home: Path) -> tuple[bool, str]:
    folder = make_photos(home.parent / "photos", 3)
    proc = start(home, "add-concept", str(folder), "--name", "bo", "--quiet")
    if not wait_for(lambda: len(checkpoints(home)) >= 1 or proc.poll() is not None):
        proc.kill()
        return False, "training never checkpointed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = yoc(home, "add-concept", str(folder), "--name", "bo")
    if again.returncode != 0:
        return False, again.stderr[-300:]
    if "Duplicate" in again.stderr or "Continuing the interrupted training" not in again.stderr:
        return False, "the re-run did not continue the training: " + again.stderr[-300:]
    return library_consistent(home)


@case("kills", "SIGKILL import at many moments")
def _kill_import(home: Path) -> tuple[bool, str]:
    source = home.parent / "source"
    new_concept(source, "bo", 5)
    bundle = home.parent / "bo.yoc.zip"
    if yoc(source, "concepts", "export", "bo", "--out", str(bundle)).returncode != 0:
        return False, "export failed"
    for delay in (0.3, 0.6, 0.9, 1.2, 1.6):
        proc = start(home, "concepts", "import", str(bundle))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ok, why = library_consistent(home)
        if not ok:
            return ok, f"after a kill at {delay}s: {why}"
        listed = json.loads(yoc(home, "concepts", "list", "--json").stdout)
        if listed:  # imported completely before the kill: remove it and try again
            if yoc(home, "concepts", "rm", "bo", "--yes").returncode != 0:
                return False, "rm after import failed"
    final = yoc(home, "concepts", "import", str(bundle))
    return final.returncode == 0, final.stderr[-200:]


@case("kills", "SIGKILL rm at many moments")
def _kill_rm(home: Path) -> tuple[bool, str]:
    for delay in (0.2, 0.5, 0.8, 1.2):
        new_concept(home, "bo", 4)
        proc = start(home, "concepts", "rm", "bo", "--yes")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ok, why = library_consistent(home)
        if not ok:
            return ok, f"after a kill at {delay}s: {why}"
        if json.loads(yoc(home, "concepts", "list", "--json").stdout):
            yoc(home, "concepts", "rm", "bo", "--yes")
    doctor = yoc(home, "doctor", "--json")
    report = json.loads(doctor.stdout)
    return "error" not in report["library"], json.dumps(report["library"])[:200]


@case("kills", "leftover temp files collected by doctor")
def _leftovers(home: Path) -> tuple[bool, str]:
    new_concept(home)
    stale = home / "concepts" / ".vectors.safetensors.abcd.tmp"
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    yoc(home, "doctor")
    return not stale.exists(), "the stale temp file is still there"


@case("concurrency", "two trainings of one concept at once")
def _two_trainings(home: Path) -> tuple[bool, str]:
    new_concept(home)
    first = start(home, "train", "bo", "--steps", STEPS, "--quiet")
    if not wait_for(lambda: checkpoint_step(home) >= 1 or first.poll() is not None):
        first.kill()
        return False, "the first training never started"
    second = yoc(home, "train", "bo", "--steps", "2", "--quiet")
    first_out = first.communicate(timeout=300)
    if first.returncode != 0:
        return False, f"the first run failed: {first_out[1][-300:]}"
    if second.returncode != 2 or "already training" not in second.stderr:
        return False, f"the second run was not refused: {second.returncode} {second.stderr[-200:]}"
    return library_consistent(home)


@case("concurrency", "rename and rm while training")
def _rename_during_training(home: Path) -> tuple[bool, str]:
    new_concept(home)
    proc = start(home, "train", "bo", "--steps", STEPS, "--quiet")
    if not wait_for(lambda: checkpoint_step(home) >= 1 or proc.poll() is not None):
        proc.kill()
        return False, "training never started"
    renamed = yoc(home, "concepts", "rename", "bo", "sunny")
    removed = yoc(home, "concepts", "rm", "bo", "--yes")
    proc.communicate(timeout=300)
    if proc.returncode != 0:
        return False, "the training failed"
    for result in (renamed, removed):
        if result.returncode != 2 or "is training" not in result.stderr:
            return False, f"not refused: {result.stderr[-200:]}"
    listed = json.loads(yoc(home, "concepts", "list", "--json").stdout)
    return [c["status"] for c in listed] == ["ready"], f"after the run: {listed}"


@case("concurrency", "two add-concepts and a pool add at once")
def _parallel_adds(home: Path) -> tuple[bool, str]:
    yoc(home, "concepts", "list")  # create the library first
    procs = [start(home, "add-concept", str(make_photos(home.parent / f"c{i}", 3, 10 * i)), "--name", f"c{i}",
                   "--no-train", "--quiet") for i in range(2)]
    procs.append(start(home, "pool", "add", str(make_photos(home.parent / "pool", 6, 100))))
    codes = [p.wait(timeout=300) for p in procs]
    if codes != [0, 0, 0]:
        return False, f"exit codes {codes}"
    listed = json.loads(yoc(home, "concepts", "list", "--json").stdout)
    return [c["photos"] for c in listed] == [3, 3], f"{listed}"


@case("concurrency", "import while removing another concept")
def _import_and_rm(home: Path) -> tuple[bool, str]:
    source = home.parent / "source"
    new_concept(source, "rex", 3)
    bundle = home.parent / "rex.yoc.zip"
    yoc(source, "concepts", "export", "rex", "--out", str(bundle))
    new_concept(home, "bo", 3)
    a = start(home, "concepts", "import", str(bundle))
    b = start(home, "concepts", "rm", "bo", "--yes")
    codes = [a.wait(timeout=300), b.wait(timeout=300)]
    listed = json.loads(yoc(home, "concepts", "list", "--json").stdout)
    return codes == [0, 0] and [c["name"] for c in listed] == ["rex"], f"{codes} {listed}"


@case("training", "the same training command twice gives the same rows")
def _repeatable(home: Path) -> tuple[bool, str]:
    from safetensors.numpy import load_file

    rows = []
    for n in range(2):
        sub = home / f"run{n}"
        new_concept(sub)
        done = yoc(sub, "train", "bo", "--steps", "6", "--json")
        if done.returncode != 0:
            return False, done.stderr[-300:]
        rows.append(load_file(json.loads(done.stdout)["vectors_path"]))
    worst = max(float(abs(rows[0][k].astype("float64") - rows[1][k]).max()) for k in rows[0])
    return worst == 0.0, f"largest difference {worst:.3g}"


@case("network", "train and ask with the network cut")
def _no_network(home: Path) -> tuple[bool, str]:
    guard = home.parent / "guard"
    guard.mkdir(parents=True, exist_ok=True)
    log = guard / "attempts.txt"
    (guard / "sitecustomize.py").write_text(
        "import socket\n"
        f"LOG = {str(log)!r}\n"
        "def refuse(self, address, *a, **k):\n"
        "    if isinstance(address, tuple):\n"
        "        open(LOG, 'a').write(repr(address) + '\\n')\n"
        "        raise OSError('network cut by the campaign')\n"
        "    return _connect(self, address, *a, **k)\n"
        "_connect = socket.socket.connect\n"
        "socket.socket.connect = refuse\n")
    pythonpath = os.pathsep.join([str(guard), os.environ.get("PYTHONPATH", "")])
    new_concept(home)
    for args in (["train", "bo", "--steps", "2", "--quiet"], ["ask", "what is <bo>?", "--quiet"],
                 ["doctor"]):
        yoc(home, *args, PYTHONPATH=pythonpath)
    attempts = log.read_text() if log.exists() else ""
    return not attempts, f"connections tried: {attempts[:200]}"


def run_slow(tallies: dict[str, Tally], only: str | None = None) -> None:
    for category, name, fn in SLOW:
        if only and only not in name:
            continue
        with tempfile.TemporaryDirectory(prefix="yoc-campaign-") as tmp:
            home = Path(tmp) / "home"
            started = time.monotonic()
            try:
                ok, detail = fn(home)
            except Exception as err:  # noqa: BLE001 - a case that crashes is a case that failed
                ok, detail = False, f"{type(err).__name__}: {err}"
            print(f"  {'held  ' if ok else 'FAILED'} {category:12} {name} ({time.monotonic() - started:.0f} s)"
                  + ("" if ok else f": {detail}"), file=sys.stderr, flush=True)
            tallies.setdefault(category, Tally()).add(name, ok, detail)


# -- report ---------------------------------------------------------------------------------------
def table(tallies: dict[str, Tally]) -> str:
    lines = ["| category | tried | held | failed |", "|---|---:|---:|---:|"]
    total = Tally()
    for category in sorted(tallies):
        t = tallies[category]
        lines.append(f"| {category} | {t.tried} | {t.held} | {len(t.failed)} |")
        total.tried, total.held = total.tried + t.tried, total.held + t.held
        total.failed += t.failed
    lines.append(f"| **all** | **{total.tried}** | **{total.held}** | **{len(total.failed)}** |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast-only", action="store_true", help="Only the pytest cases.")
    parser.add_argument("--slow-only", action="store_true", help="Only the subprocess cases.")
    parser.add_argument("--only", help="Run only the slow cases whose name contains this.")
    parser.add_argument("--markdown", type=Path, help="Also write the table and failures to this file.")
    args = parser.parse_args()
    tallies: dict[str, Tally] = {}
    started = time.monotonic()
    if not args.slow_only:
        print("fast cases (pytest)…", file=sys.stderr, flush=True)
        run_fast(tallies)
    if not args.fast_only:
        print("slow cases…", file=sys.stderr, flush=True)
        run_slow(tallies, args.only)
    text = table(tallies)
    failures = [f for t in tallies.values() for f in t.failed]
    minutes = (time.monotonic() - started) / 60
    footer = f"\nmachine: {machine()}\ncommand: {' '.join(sys.argv)}\nwall time: {minutes:.1f} min"
    print(text + footer)
    for failure in failures:
        print(f"FAILED {failure}")
    if args.markdown:
        args.markdown.write_text(text + "\n" + footer.replace("\n", "\n\n") + "\n"
                                 + "".join(f"\n* FAILED {f}" for f in failures) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
