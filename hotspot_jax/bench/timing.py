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


def warm_up(workload: Any, train_steps: int = 2) -> list[float]:
    """Run a workload's first ``train_steps`` train calls and one inference call (compilation, allocator
    and kernel caches warm up); their seconds are appended to ``workload.warmup_seconds`` and returned."""
    for _ in range(train_steps):
        t0 = time.perf_counter()
        workload.train(1)
        workload.warmup_seconds.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    workload.infer(1)
    workload.warmup_seconds.append(time.perf_counter() - t0)
    return workload.warmup_seconds
