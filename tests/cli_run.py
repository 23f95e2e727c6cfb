"""Run the real `yoc` command in a subprocess, as a user does (the test's YOC_HOME and
environment travel with it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_yoc(*args: str | Path, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, umask: int | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, "-m", "yoc_assistant", *map(str, args)], input=input,
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=timeout, preexec_fn=set_umask if umask is not None else None,
                          cwd=cwd)
