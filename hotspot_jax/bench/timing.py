"""Repeated timing with the median, and the machine load recorded with every repetition.

The machine this project is benchmarked on is shared, so every repetition stores the 1-minute load
average next to its time: a reader can tell a slow repetition from a busy machine.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Any, Callable


def load_average() -> float:
    """The 1-minute load average (runnable processes), or -1 where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


@dataclasses.dataclass
class Measurement:
    """Per-repetition wall times of one workload; ``images`` images are processed per repetition."""

    images: int
    seconds: list[float] = dataclasses.field(default_factory=list)
    cpu_seconds: list[float] = dataclasses.field(default_factory=list)  # process CPU time (all threads)
    load: list[float] = dataclasses.field(default_factory=list)

    def add(self, run: Callable[[], Any]) -> float:
        """Time one call of ``run`` (which must block until its work is done); returns the seconds."""
        cpu0, t0 = time.process_time(), time.perf_counter()
        run()
        dt = time.perf_counter() - t0
        self.seconds.append(dt)
        self.cpu_seconds.append(time.process_time() - cpu0)
        self.load.append(load_average())
        return dt

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def images_per_second(self) -> float:
        """Images per second of the median repetition."""
        return self.images / self.median_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_per_second": round(self.images_per_second, 3),
            "median_seconds": round(self.median_seconds, 6),
            "images_per_rep": self.images,
            "rep_seconds": [round(s, 6) for s in self.seconds],
            "rep_cpu_seconds": [round(s, 4) for s in self.cpu_seconds],
            "rep_load": self.load,
        }


def resident_bytes() -> int | None:
    """The process's resident memory in bytes (Linux ``/proc/self/statm``), or None where there is none."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


#: warm-up goes on until one call grows the process's resident memory by less than this many bytes: on the
#: project's VM the heap of a training step kept growing for its first few steps, each new huge page costing
#: system time that made those steps several times slower (docs/performance.md, "Warm-up until memory
#: settles"); timing those steps measured the VM, not the step
SETTLED_GROWTH_BYTES = 32 * 2**20
#: ...for at most this many calls of one kind
MAX_WARMUP_CALLS = 8


def run_until_settled(run: Callable[[], Any], min_calls: int, max_calls: int = MAX_WARMUP_CALLS,
                      on_call: Callable[[float], None] | None = None) -> int:
    """Call ``run`` at least ``min_calls`` times and then until a call grows resident memory by less than
    :data:`SETTLED_GROWTH_BYTES`, at most ``max_calls`` times (where memory cannot be read, ``min_calls``);
    ``on_call`` gets each call's seconds. Returns the number of calls."""
    calls = 0
    while calls < max(min_calls, max_calls, 1):
        before = resident_bytes()
        t0 = time.perf_counter()
        run()
        if on_call:
            on_call(time.perf_counter() - t0)
        calls += 1
        after = resident_bytes()
        if calls >= min_calls and (before is None or after is None or after - before < SETTLED_GROWTH_BYTES):
            break
    return calls


def warm_up(workload: Any, train_steps: int = 2) -> list[float]:
    """Run a workload's train calls (at least ``train_steps``, then until memory settles) and inference calls
    (at least one, then until memory settles): compilation, allocator and kernel caches warm up. Their
    seconds are appended to ``workload.warmup_seconds`` and returned."""
    record = workload.warmup_seconds.append
    run_until_settled(lambda: workload.train(1), train_steps, on_call=record)
    run_until_settled(lambda: workload.infer(1), 1, on_call=record)
    return workload.warmup_seconds
