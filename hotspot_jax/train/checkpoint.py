"""Orbax checkpoints of a run: ``checkpoints/<step>`` (full state, the latest ``keep``) and ``best/<step>``.

``checkpoints/`` holds what resumption needs (params, batch_stats, optimiser state, step, plus a JSON
``meta`` item with the epoch position and the metrics history, and the weight average ``ema`` of a run that
keeps one); ``best/`` holds only the variables that were validated (the average, if any) of the checkpoint
chosen by validation (see :func:`hotspot_jax.train.loop.is_better`). Orbax writes each step to
a temporary directory and renames it when complete, so a killed run never leaves a partial checkpoint.

A checkpoint damaged afterwards (a truncated data file, an emptied metadata file: a full disk, a killed
copy) raises :class:`~hotspot_jax.errors.CheckpointError` naming it, never orbax's traceback. Resuming
skips it for the newest one that restores, after moving it to ``damaged/`` (never deleted), see
:meth:`RunCheckpoints.restore_newest` and :meth:`RunCheckpoints.check_best` (tests/test_damaged_checkpoint.py).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

from hotspot_jax.errors import CheckpointError

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
DAMAGED_DIR = "damaged"  # damaged checkpoints moved aside when a resume skips them


def failure_reason(err: BaseException, limit: int = 200) -> str:
    """One short line for why orbax could not read a checkpoint: the innermost cause's first line.

    Orbax wraps tensorstore's precise error ("Requested byte range ... is not valid for value of size
    1000") in a bare ``Exception`` whose message embeds a many-line TensorStore spec.
    """
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if str(err).strip() and not isinstance(err, StopIteration):
            chain.append(err)
        err = err.__cause__ or err.__context__
    if not chain:
        return "unreadable"
    text = str(chain[-1]).strip().splitlines()[0]
    text = text.split(". See full TensorStore details")[0]
    text = re.sub(r'Error reading "[^"]*" in OCDBT database at local file "[^"]*": ', "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
        _all_saved()

    def save_best(self, step: int, variables: dict[str, Any], meta: dict[str, Any]) -> None:
        """Save ``{"params", "batch_stats"}`` (the evaluated ones: hotspot_jax.train.ema.evaluated_variables) as
        ``best/<step>`` (replacing the previous best)."""
        if step in self.best.all_steps():  # resumed after a kill between the two saves: same content
            return
        self.best.save(
            step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta))
        )
        self.best.wait_until_finished()
        _all_saved()

    def restore(self, step: int, target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state saved at ``step`` shaped like ``target``, and its meta; CheckpointError when unreadable."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore())
        out = _read(self.latest, self.latest_dir / str(step), step, args)
        return out["state"], out["meta"]

    def restore_best(self, target: dict[str, Any], step: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The best variables shaped like ``target`` (``{"params", "batch_stats"}``) and their meta."""
        step = self.best_step() if step is None else step
        args = ocp.args.Composite(variables=ocp.args.StandardRestore(_abstract(target)), meta=ocp.args.JsonRestore())
        out = _read(self.best, self.best_dir / str(step), step, args)
        return out["variables"], out["meta"]

    def set_aside(self, path: Path) -> Path:
        """Move the damaged checkpoint ``path`` (``checkpoints/<step>`` or ``best/<step>``) to
        ``damaged/<kind>-<step>`` beside them, out of the managers' sight; returns where it went."""
        target = path.parent.parent / DAMAGED_DIR / f"{path.parent.name}-{path.name}"
        n = 1
        while target.exists():
            n += 1
            target = target.with_name(f"{path.parent.name}-{path.name}.{n}")
        from hotspot_jax.train import distributed

        if distributed.is_primary():  # every process found it damaged (the same files); one moves it
            target.parent.mkdir(exist_ok=True)
            os.replace(path, target)
        distributed.barrier("set-aside")
        self.latest.reload()
        self.best.reload()
        return target

    def restore_newest(self, target: dict[str, Any], log: Callable[[str], None]
                       ) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """(step, state, meta) of the newest checkpoint that restores, or None when none does.

        Each one that does not is moved to ``damaged/`` and named in the log with the reason, so the
        run goes on from the one before it (and saves the skipped step again when it gets there).
        """
        skipped = False
        for step in sorted(self.latest.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, target)
            except CheckpointError as err:
                moved = self.set_aside(err.path)
                log(f"skipped damaged checkpoint {err.path} ({err.reason}); moved it to {moved}")
                skipped = True
                continue
            return step, state, meta
        if skipped:
            log("no intact checkpoint is left: the run starts again from its first epoch")
        return None

    def check_best(self, target: dict[str, Any], resumed_step: int, rebuild_target: dict[str, Any],
                   rule: str, log: Callable[[str], None]) -> None:
        """Make sure ``best/`` restores before resuming at ``resumed_step``.

        A damaged best checkpoint is moved to ``damaged/``. If the run will pass its step again (it is
        later than ``resumed_step``), training saves it anew; otherwise it is rebuilt from
        ``checkpoints/<step>`` (the same weights), or, when that is gone too, CheckpointError says so.
        """
        step = self.best_step()
        if step is None:
            return
        try:
            self.restore_best(target, step)
            return
        except CheckpointError as err:
            moved = self.set_aside(err.path)
            log(f"skipped damaged best checkpoint {err.path} ({err.reason}); moved it to {moved}")
            if step > resumed_step:
                return
            if step in self.latest.all_steps():
                state, meta = self.restore(step, rebuild_target)
                from hotspot_jax.train.ema import evaluated_variables

                self.save_best(step, evaluated_variables(state),
                               {"epochs_done": meta["epochs_done"], "best": meta.get("best"), "rule": rule})
                log(f"rebuilt {err.path} from {self.latest_dir / str(step)}")
                return
            raise CheckpointError(
                f"the chosen checkpoint {err.path} is damaged ({err.reason}) and {self.latest_dir / str(step)}, "
                f"its copy, is gone; rerun with --overwrite to train again (the damaged one is in {moved})",
                err.path,
                err.reason,
            ) from None

    def close(self) -> None:
        self.latest.close()
        self.best.close()


def _all_saved() -> None:
    """In a multi-process run, no process goes on (and may read the checkpoint) before it is complete for all."""
    from hotspot_jax.train import distributed

    distributed.barrier("saved")


def _read(manager, path: Path, step: int, args) -> dict[str, Any]:
    """``manager.restore(step, args)``; any failure (orbax raises bare ``Exception`` for a truncated file)
    becomes a CheckpointError naming ``path``, with what to do."""
    _quiet_late_reads()  # before: a failed read's siblings may complete before the exception reaches us
    try:
        return manager.restore(step, args=args)
    except Exception as err:  # noqa: BLE001 - orbax/tensorstore/json raise anything; KeyboardInterrupt passes
        reason = failure_reason(err)
        error = CheckpointError(
            f"checkpoint {path} cannot be read ({reason}): it is damaged (truncated or emptied) or not this "
            "run's; rerun the training command, which sets it aside and goes on from the newest intact checkpoint, "
            f"or use another checkpoint ({path.parent.parent / LATEST_DIR}/<step>)",
            path,
            reason,
        )
        raise error from None


def _quiet_late_reads() -> None:
    """Silence the reads still in flight when a restore fails: tensorstore completes them after orbax has
    closed its event loop, and each printed a "RuntimeError: Event loop is closed" traceback (through
    ``sys.unraisablehook``). Only that error is dropped; the hook is wrapped once per process (and again
    if someone replaced it since)."""
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_loop", False):
        return

    def hook(info):
        if isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == "Event loop is closed":
            return
        previous(info)

    hook._drops_closed_loop = True
    sys.unraisablehook = hook
