"""The CPU thread count of a training run on a small backbone, chosen by measuring.

Why: on the toy backbone (hidden 192) a step's matrices are small. On a quiet 2-core
machine a second thread shares the matrix work; on one whose other core is busy the two
threads wait for each other at every parallel region (measured on `yoc demo`'s batches
with a pretraining job on the other core: 70 ms a step on one thread, 223 ms on two).
Neither count is right everywhere, so before the first step the trainer looks at how
busy the machine's cores are (`spare_cores`: a fifth of a second of /proc/stat) and,
where as many cores are idle as a count has threads, times the first micro-batch's forward and
backward at each allowed count (`Backbone.caches.cpu_threads`, set by app/backbones.py
only when the user fixed no count) and keeps the fastest. (Timing two threads on a busy
machine is itself slow: one pass took 3 s there, against 0.06 s on one thread.) The run
then stays on the chosen count, so it is as repeatable as a run at that fixed count. If the
machine gets busy later and the steps slow to `SLOWDOWN` times the measured rate, the
rest of the run falls back to the first count (a note says so).

The numbers: one thread and two give the same rows to float rounding, not bit for bit
(MKL splits some reductions across threads; measured: gradients differ by ~1e-7), so
YOC_THREADS (or OMP_NUM_THREADS) fixes the count where runs must be bit-identical.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

TRIES = 2  # timed passes per count (the fastest counts: the first may start the thread pool)
FASTER = 0.8  # another count must take at most this share of the first count's time
SLOWDOWN = 2.0  # steps this many times slower per token than measured: back to the first count
WINDOW = 10  # steps whose median is compared with the measured rate
SPARE_SLACK = 0.25  # a core counts as free when this little of it is in use


@dataclass
class ThreadChoice:
    """The count a run trains at, why, and the fallback watch over its steps."""

    count: int
    base: int  # the first allowed count: evaluation runs at it, and the fallback goes to it
    seconds_per_token: dict[int, float] = field(default_factory=dict)  # measured before the first step
    recent: list[float] = field(default_factory=list)
    fell_back_at: int | None = None

    def note(self) -> str:
        if not self.seconds_per_token:
            return f"training on {self.count} CPU thread(s), as the run it resumes"
        if len(self.seconds_per_token) < 2:
            return f"training on {self.count} CPU thread(s) (too few idle cores to try more)"
        times = ", ".join(f"{c}: {s * 1e6:.1f} us/token" for c, s in self.seconds_per_token.items())
        return f"training on {self.count} CPU thread(s) (measured {times})"

    def after_step(self, step: int, tokens: int, seconds: float) -> str | None:
        """Watch the step just run; returns a note when the run falls back to `base`."""
        if self.count == self.base or self.fell_back_at is not None:
            return None
        self.recent = [*self.recent[-(WINDOW - 1):], seconds / max(tokens, 1)]
        measured = self.seconds_per_token.get(self.count)
        if len(self.recent) < WINDOW or not measured or statistics.median(self.recent) < SLOWDOWN * measured:
            return None
        self.count, self.fell_back_at = self.base, step
        torch.set_num_threads(self.base)
        return (f"the steps slowed to {statistics.median(self.recent) / measured:.1f}x the measured rate "
                f"(the machine got busier): training goes on at {self.base} CPU thread(s) from step {step}")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def spare_cores(window_s: float = 0.2) -> float:
    """Cores left idle by every process over the next `window_s` seconds (this one sleeps
    meanwhile): /proc/stat's idle time on Linux, else the cores less the load average."""
    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return (fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)) if len(fields) >= 4 else None

    first = sample()
    if first is not None:
        time.sleep(window_s)
        second = sample()
        if second is not None and second[1] > first[1]:
            return usable_cores() * (second[0] - first[0]) / (second[1] - first[1])
    try:
        return max(0.0, usable_cores() - os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def choose_threads(choices: Sequence[int], tokens: int, work: Callable[[], object],
                   spare: Callable[[], float] | None = None) -> ThreadChoice:
    """Time `work()` (one micro-batch's forward and backward, `tokens` fed) at the first
    count and at each other count that `spare()` leaves an idle core per thread for, up to `TRIES`
    times (once when the first pass is already twice the first count's time), and set
    torch to the fastest: the first count unless another takes at most `FASTER` of its time."""
    if not choices:
        raise ValueError("choose_threads needs at least one thread count")
    timing: dict[int, float] = {}
    free = (spare or spare_cores)() if len(choices) > 1 else 0.0
    for count in choices:
        if timing and free < count - SPARE_SLACK:  # every thread needs an idle core
            continue
        torch.set_num_threads(count)
        best = float("inf")
        for _ in range(TRIES):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
            if timing and best > 2 * timing[choices[0]] * max(tokens, 1):
                break
        timing[count] = best / max(tokens, 1)
    base = choices[0]
    chosen = min(timing, key=lambda c: timing[c])
    if chosen != base and timing[chosen] > FASTER * timing[base]:
        chosen = base
    torch.set_num_threads(chosen)
    return ThreadChoice(chosen, base, timing)
