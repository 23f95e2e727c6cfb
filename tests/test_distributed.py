"""Concept training under `accelerate launch` with 2 CPU processes (gloo): the same result
as one process at the same global batch, and a killed process leaves a resumable run.

Tolerance: the rows of the 2-process run equal the 1-process run's to 1e-6 (absolute; the
two gradients summed across processes are the two micro-batches a single process adds).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from distributed_worker import train
from safetensors import safe_open
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "distributed_worker.py"
STEPS = 60
TOLERANCE = 1e-6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(run: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), str(WORKER), str(run), str(out),
           "--steps", str(STEPS), "--grad-accum", "1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# Waiting on a checkpoint ends when it appears or the run exits without it (a real
# failure, reported with its output); the wall-clock limit only catches a hung run. A
# 240 s limit failed once on a starved shared machine (5 min of CPU in 10 min of wall).
HUNG_AFTER_S = 900


def wait_for(path_glob: Path, pattern: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + HUNG_AFTER_S
    while not any(path_glob.glob(pattern)):
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the run exited ({proc.returncode}) before {pattern} in {path_glob}:\n{output}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern} in {path_glob} after {HUNG_AFTER_S} s: the run hangs")
        time.sleep(0.02)


def test_two_processes_match_one_and_survive_a_kill(tmp_path: Path) -> None:
    # One process, two micro-batches per step: the global batch of two processes with one each.
    reference = train(tmp_path / "one", STEPS, grad_accum=2)

    run = tmp_path / "two"
    proc = launch(run, tmp_path / "killed.safetensors")
    wait_for(run / "ckpt", "step-00000003*", proc)
    os.kill(int((run / "pid-1").read_text()), signal.SIGKILL)  # one worker dies mid-run
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0, output
    assert not (tmp_path / "killed.safetensors").exists()
    left = sorted((run / "ckpt").glob("step-*.safetensors"))
    assert left, "the killed run left no checkpoint"
    with safe_open(str(left[-1]), "pt") as f:  # every checkpoint left is whole
        assert f.keys()
    stopped_at = int(left[-1].stem.split("-")[1])
    assert 3 <= stopped_at < STEPS

    proc = launch(run, tmp_path / "resumed.safetensors", "--resume")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    got = load_file(str(tmp_path / "resumed.safetensors"))
    with safe_open(str(tmp_path / "resumed.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["step"] == str(STEPS) and int(meta["resumed_from"]) >= stopped_at
    torch.testing.assert_close(got["input"], reference.last.input_rows, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(got["output"], reference.last.output_rows, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(got["losses"], torch.tensor(reference.losses), atol=1e-5, rtol=0)
    assert reference.losses[-1] < reference.losses[0]  # it trained


