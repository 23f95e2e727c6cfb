"""`yoc` with a pause after each stored photo and each linked row: `python slowed_yoc.py
SECONDS ARGS...`. Widens the window in which test_kill's SIGKILL lands mid-ingest, from
the test's side (the product has no test switch)."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any

from yoc_assistant.library import core, store


def _slowed(fn: Callable[..., Any], delay: float) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        time.sleep(delay)
        return out

    return wrapper


if __name__ == "__main__":
    delay = float(sys.argv.pop(1))
    store.ImageStore.put = _slowed(store.ImageStore.put, delay)  # ingest: one per new photo
    core.Library._insert_image = _slowed(core.Library._insert_image, delay)  # inside the transaction
    from yoc_assistant.cli import main

    main()
