"""Is the input pipeline the bottleneck? One real training run against the sum of its step times.

Runs the library's training loop (``hotspot_jax.train.loop.train``, what ``scripts/train.py`` runs) for
two epochs on the real dataset in a temporary work directory, takes the second epoch's training time
(the first includes compilation), and compares it with ``steps x`` the median time of the same train
step measured in this process on a synthetic batch before and after the run. A ratio near 1 means
the loop (indexing, sharding, host-to-device copies, metric fetches) adds next to nothing.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from hotspot_jax.bench.batch import SyntheticBatch
from hotspot_jax.bench.jax_steps import JaxWorkload
from hotspot_jax.bench.timing import Measurement, load_average


def _step_seconds(arch: str, image_size: int, batch_size: int, reps: int, steps: int) -> Measurement:
    jx = JaxWorkload(arch, image_size, SyntheticBatch.make(batch_size))
    jx.warm_up(train_steps=2)
    m = Measurement(batch_size * steps)
    for _ in range(reps):
        m.add(lambda: jx.train(steps))
    return m


def epoch_check(
    arch: str,
    image_size: int,
    batch_size: int,
    *,
    data: str | None = None,
    limit_train: int | None = None,
    limit_eval: int | None = 256,
    reps: int = 3,
    steps_per_rep: int = 5,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Second-epoch seconds of a real 2-epoch run vs ``steps x`` the median step seconds."""
    from hotspot_jax.train.config import TrainConfig
    from hotspot_jax.train.loop import train

    before = _step_seconds(arch, image_size, batch_size, reps, steps_per_rep)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hotspot-epoch-check-") as tmp:
        cfg = TrainConfig(
            arch=arch, data=data, epochs=2, batch_size=batch_size, image_size=image_size,
            limit_train=limit_train, limit_eval=limit_eval, workdir=str(Path(tmp) / "run"), keep=1,
        )
        t0 = time.perf_counter()
        train(cfg, progress=False, log=lambda msg: (lines.append(msg), log(f"  train: {msg}")))
        wall = time.perf_counter() - t0
        history = [json.loads(l) for l in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines() if l]
        config = json.loads((Path(tmp) / "run" / "config.json").read_text())
    load_after_run = load_average()
    after = _step_seconds(arch, image_size, batch_size, reps, steps_per_rep)
    per_step = statistics.median([s / steps_per_rep for s in before.seconds + after.seconds])
    steps = int(config["steps_per_epoch"])
    epoch2 = history[1]
    predicted = steps * per_step
    return {
        "arch": arch,
        "image_size": image_size,
        "batch_size": batch_size,
        "limit_train": limit_train,
        "limit_eval": limit_eval,
        "steps_per_epoch": steps,
        "epoch_seconds": [h["train_seconds"] for h in history],  # epoch 1 includes compilation
        "epoch2_images_per_second": epoch2["images_per_second"],
        "median_step_seconds": per_step,
        "steps_x_median_step_seconds": predicted,
        "epoch2_over_steps": epoch2["train_seconds"] / predicted,
        "step_rep_seconds_before": before.seconds,
        "step_rep_seconds_after": after.seconds,
        "load": {"before": before.load, "after_run": load_after_run, "after": after.load},
        "run_wall_seconds": wall,
        "train_log": lines,
    }
