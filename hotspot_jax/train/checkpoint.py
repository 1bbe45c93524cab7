"""Orbax checkpoints of a run: ``checkpoints/<step>`` (full state, the latest ``keep``) and ``best/<step>``.

``checkpoints/`` holds what resumption needs (params, batch_stats, optimiser state, step, plus a JSON
``meta`` item with the epoch position and the metrics history); ``best/`` holds only the variables of the
checkpoint chosen by validation (see :func:`hotspot_jax.train.loop.is_better`). Orbax writes each step to
a temporary directory and renames it when complete, so a killed run never leaves a partial checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST_DIR = "checkpoints"
BEST_DIR = "best"


def _manager(directory: Path, keep: int | None, items: tuple[str, ...], read_only: bool = False):
    if read_only:
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=0, max_to_keep=None, create=False, read_only=True, enable_async_checkpointing=False
        )
    else:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # orbax warns that a read-only directory is read-only
    try:
        return ocp.CheckpointManager(directory.absolute(), options=options, item_names=items)
    finally:
        absl_logger.setLevel(level)


def _abstract(tree: Any) -> Any:
    """Shape/dtype/sharding of each leaf; leaves without a sharding are restored onto the first device."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def one(x):
        sharding = getattr(x, "sharding", None)
        if not isinstance(sharding, jax.sharding.Sharding) or len(sharding.device_set) != 1:
            sharding = default
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(one, tree)


class RunCheckpoints:
    """The two checkpoint managers of one work directory."""

    def __init__(self, workdir: str | Path, keep: int = 3, read_only: bool = False):
        workdir = Path(workdir)
        self.latest_dir = workdir / LATEST_DIR
        self.best_dir = workdir / BEST_DIR
        self.latest = _manager(self.latest_dir, keep, ("state", "meta"), read_only)
        self.best = _manager(self.best_dir, 1, ("variables", "meta"), read_only)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def best_step(self) -> int | None:
        return self.best.latest_step()

    def save(self, step: int, state: dict[str, Any], meta: dict[str, Any]) -> None:
        """Save the full state (host arrays) and its meta as ``checkpoints/<step>``."""
        if step in self.latest.all_steps():
            self.latest.delete(step)
        self.latest.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.latest.wait_until_finished()

    def save_best(self, step: int, variables: dict[str, Any], meta: dict[str, Any]) -> None:
        """Save ``{"params", "batch_stats"}`` as ``best/<step>`` (replacing the previous best)."""
        if step in self.best.all_steps():  # resumed after a kill between the two saves: same content
            return
        self.best.save(
            step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta))
        )
        self.best.wait_until_finished()

    def restore(self, step: int, target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state saved at ``step`` shaped like ``target``, and its meta."""
        out = self.latest.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore())
        )
        return out["state"], out["meta"]

    def restore_best(self, target: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The best variables shaped like ``target`` (``{"params", "batch_stats"}``) and their meta."""
        step = self.best_step() if step is None else step
        out = self.best.restore(
            step,
            args=ocp.args.Composite(variables=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore()),
        )
        return out["variables"], out["meta"]

    def close(self) -> None:
        self.latest.close()
        self.best.close()
