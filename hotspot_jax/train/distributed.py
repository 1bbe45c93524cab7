"""Multi-process training: processes joined by ``jax.distributed``, one ``pmap`` over every device of every process.

Every process loads the same data, builds the same batch order (seed, epoch) and feeds only the rows of
its own devices; gradients, BatchNorm statistics and metrics are reduced over the pmap axis, which then
spans all processes, so N processes x D devices give the numbers of one process with N x D devices
(tests/test_distributed.py). Process 0 writes every file and prints every line; orbax checkpoints are
saved and restored by all processes together. Single-process runs never call anything here that
communicates: every helper is the identity with one process.

A peer that dies makes the next collective fail at once (its connection closes), or, if it hangs
without exiting, the coordination service stops every process once it has sent no heartbeat for
``--peer-timeout`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
from typing import Any, Callable, Sequence

import numpy as np

from hotspot_jax.errors import ConfigError, HotspotError

JOIN_TIMEOUT = 300  # seconds every process may take to start and join (jax.distributed's initialization_timeout)
PEER_TIMEOUT = 60  # seconds without a heartbeat before a peer counts as dead (heartbeat_timeout_seconds)
WAIT_TIMEOUT_MS = 3 * 3600 * 1000  # waiting for process 0's data or files: a dead process 0 ends it sooner
_COUNTER = itertools.count()  # names of barriers and shared values: the same sequence in every process


class PeerError(HotspotError):
    """Another process of a multi-process run failed or stopped."""


@dataclasses.dataclass(frozen=True)
class Launch:
    """How this process joins a multi-process run: explicit (coordinator, count, id) or detected (``auto``)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    join_timeout: int = JOIN_TIMEOUT
    peer_timeout: int = PEER_TIMEOUT

    @property
    def auto(self) -> bool:
        return self.coordinator is None


def add_options(parser: argparse.ArgumentParser) -> None:
    """The multi-process options of scripts/train.py and scripts/reproduce.py (docs/scaling.md)."""
    g = parser.add_argument_group("multi-process training (docs/scaling.md)")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help="join a multi-process run coordinated by process 0 at HOST:PORT (with --num-processes and "
                   "--process-id); every process is started with the same other options (default: one process)")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in the run, with --coordinator")
    g.add_argument("--process-id", type=int, metavar="I", help="this process's index 0..N-1, with --coordinator; "
                   "process 0 writes every file and prints every line")
    g.add_argument("--distributed", action="store_true",
                   help="join a multi-process run described by the environment (SLURM, Open MPI's mpirun, "
                   "Kubernetes), as jax.distributed.initialize() detects it (default: one process)")
    g.add_argument("--join-timeout", type=int, metavar="S",
                   help=f"seconds to wait for every process to join (default: {JOIN_TIMEOUT})")
    g.add_argument("--peer-timeout", type=int, metavar="S",
                   help="seconds a process may go without a heartbeat before every other process stops with an "
                   f"error; a process that exits stops the others at their next step (default: {PEER_TIMEOUT})")


def launch_from_args(args: argparse.Namespace) -> Launch | None:
    """The :class:`Launch` the options ask for, or None for an ordinary single-process run."""
    explicit = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
                "--process-id": args.process_id}
    given = [k for k, v in explicit.items() if v is not None]
    timeouts = {"--join-timeout": args.join_timeout, "--peer-timeout": args.peer_timeout}
    if not given and not args.distributed:
        extra = [k for k, v in timeouts.items() if v is not None]
        if extra:
            raise ConfigError(f"{extra[0]} is for multi-process runs: add --distributed or --coordinator")
        return None
    for option, value in timeouts.items():
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1 second, got {value}")
    kw = {"join_timeout": args.join_timeout or JOIN_TIMEOUT, "peer_timeout": args.peer_timeout or PEER_TIMEOUT}
    if args.distributed and given:
        raise ConfigError(f"--distributed reads the cluster from the environment; drop {', '.join(given)}, or drop "
                          "--distributed and give all of --coordinator, --num-processes and --process-id")
    if args.distributed:
        return Launch(**kw)
    missing = [k for k, v in explicit.items() if v is None]
    if missing:
        raise ConfigError(f"{', '.join(given)} needs {' and '.join(missing)} too (docs/scaling.md)")
    host, _, port = args.coordinator.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--coordinator {args.coordinator!r} is not HOST:PORT")
    if args.num_processes < 1:
        raise ConfigError(f"--num-processes must be at least 1, got {args.num_processes}")
    if not 0 <= args.process_id < args.num_processes:
        raise ConfigError(f"--process-id must be in 0..{args.num_processes - 1}, got {args.process_id}")
    return Launch(args.coordinator, args.num_processes, args.process_id, **kw)


def initialize(launch: Launch | None) -> None:
    """Join the run described by ``launch`` (nothing for None); call before JAX computes anything.

    CPU processes exchange data with gloo over TCP (JAX's CPU collectives); GPUs use NCCL by themselves.
    """
    if launch is None:
        return
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # only the CPU backend reads it
    kw = dict(initialization_timeout=launch.join_timeout, heartbeat_timeout_seconds=launch.peer_timeout,
              shutdown_timeout_seconds=launch.peer_timeout)
    try:
        if launch.auto:
            jax.distributed.initialize(**kw)
        else:
            jax.distributed.initialize(coordinator_address=launch.coordinator, num_processes=launch.num_processes,
                                       process_id=launch.process_id, **kw)
    except (RuntimeError, ValueError) as err:
        what = ("--distributed: no cluster found in the environment (SLURM, Open MPI's mpirun, Kubernetes); "
                "give --coordinator, --num-processes and --process-id instead" if launch.auto and
                "coordinator_address" in str(err) else f"could not join the multi-process run ({_first_line(err)})")
        raise PeerError(what) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


# ------------------------------------------------------------------------------------------ who is who
def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_primary() -> bool:
    """True in process 0 (and in every single-process run): the process that writes files and prints."""
    return process_index() == 0


def local_devices(devices: Sequence[Any]) -> list[Any]:
    """The devices of ``devices`` that belong to this process, in their order."""
    me = process_index()
    return [d for d in devices if d.process_index == me]


def local_positions(devices: Sequence[Any]) -> np.ndarray:
    """Indices into ``devices`` (the pmap's device order) of this process's devices."""
    me = process_index()
    return np.array([i for i, d in enumerate(devices) if d.process_index == me], np.int64)


def local_rows(x: np.ndarray, devices: Sequence[Any]) -> np.ndarray:
    """This process's part of a global batch ``x`` split over ``devices``: the rows of its own devices, in
    the pmap's order (``x`` itself with one process)."""
    if process_count() == 1:
        return x
    per = x.shape[0] // len(devices)
    rows = (local_positions(devices)[:, None] * per + np.arange(per)[None, :]).ravel()
    return x[rows]


def global_outputs(x: Any, devices: Sequence[Any]) -> np.ndarray:
    """The per-device outputs ``(D_local, ...)`` of every process, as ``(D, ...)`` in ``devices`` order (numpy)."""
    if process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))
    order = np.concatenate([[i for i, d in enumerate(devices) if d.process_index == p]
                            for p in range(process_count())]).astype(np.int64)
    out = np.empty_like(gathered)
    out[order] = gathered  # process_allgather concatenates process 0's devices, then process 1's, ...
    return out


# --------------------------------------------------------------------------------------- coordination
def _client():
    from jax._src import distributed  # the coordination service's client, as orbax's multihost module uses it

    client = distributed.global_state.client
    if client is None:
        raise PeerError("multi-process helper called outside a jax.distributed run")
    return client


def barrier(name: str, timeout_ms: int = WAIT_TIMEOUT_MS) -> None:
    """Wait until every process gets here (nothing with one process)."""
    if process_count() > 1:
        _client().wait_at_barrier(f"hotspot/{next(_COUNTER)}/{name}", timeout_ms)


def on_primary(fn: Callable[[], Any], name: str) -> Any:
    """``fn()`` run by process 0 only, its result (JSON: dicts, lists, strings, numbers, None) returned in every
    process; a HotspotError it raises is raised, with the same message, in every process."""
    if process_count() == 1:
        return fn()
    key = f"hotspot/{next(_COUNTER)}/{name}"
    if is_primary():
        try:
            value = fn()
        except HotspotError as err:
            _share_error(key, {"error": str(err), "type": type(err).__name__})
            raise
        except BaseException as err:
            _share_error(key, {"error": f"process 0 failed: {_first_line(err)}", "type": "PeerError"})
            raise
        _client().key_value_set(key, json.dumps({"value": value}))
        return value
    shared = json.loads(_client().blocking_key_value_get(key, WAIT_TIMEOUT_MS))
    if "error" in shared:
        _read_barrier(key)
        raise _error_type(shared["type"])(shared["error"])
    return shared["value"]


def _share_error(key: str, error: dict) -> None:
    """Publish process 0's error and wait until every process has read it (process 0 hosts the service)."""
    _client().key_value_set(key, json.dumps(error))
    _read_barrier(key)


def _read_barrier(key: str) -> None:
    try:
        _client().wait_at_barrier(key + "/read", 60 * 1000)
    except Exception:  # noqa: BLE001 - a peer that died meanwhile: the error is raised all the same
        pass


def shutdown() -> None:
    """Leave the run together with the others (all processes call it: errors every process raised alike,
    an agreed interruption), so that no process sees the coordinator vanish; bounded by ``--peer-timeout``."""
    if process_count() == 1:
        return
    import jax

    try:
        jax.distributed.shutdown()
    except Exception:  # noqa: BLE001 - a peer already gone: leaving is all that is left to do
        pass


def primary_first(fn: Callable[[], Any], name: str) -> Any:
    """``fn()`` in every process, process 0 first (e.g. it builds a shared data cache the others then read);
    a HotspotError in process 0 is raised in every process without the others calling ``fn``."""
    if process_count() == 1:
        return fn()
    box = {}

    def first() -> None:
        box["result"] = fn()

    on_primary(first, name)  # the others wait here until process 0 is done, or raise its error
    return box["result"] if is_primary() else fn()


def _error_type(name: str) -> type:
    from hotspot_jax import errors

    found = getattr(errors, name, None)
    return found if isinstance(found, type) and issubclass(found, HotspotError) else PeerError


def peer_failure(err: BaseException) -> PeerError | None:
    """A PeerError for an exception that says another process (or the link to it) failed, else None."""
    text = str(err)
    signs = ("Gloo", "gloo", "NCCL", "heartbeat", "coordination service", "Connection closed by peer",
             "Connection reset", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Barrier timed out")
    if not any(s in text for s in signs):
        return None
    return PeerError(f"process {process_index()} of {process_count()}: another process of this run failed or "
                     f"stopped ({_first_line(err)}); rerun every process with the same command to resume")


@contextlib.contextmanager
def failing_together(launch: Launch | None):
    """Around a multi-process script's work: an error every process raised alike (a HotspotError) leaves the
    run together; an exception that says a peer failed becomes one :class:`PeerError` line."""
    try:
        yield
    except BaseException as err:
        if launch is None:
            raise
        if isinstance(err, HotspotError) and not isinstance(err, PeerError):
            shutdown()
            raise
        peer = peer_failure(err) if isinstance(err, Exception) and not isinstance(err, HotspotError) else None
        if peer is not None:
            raise peer from None
        raise


class StopVote:
    """Ctrl-C in any one process stops every process after the same step.

    Each step casts the local flag into a psum over all devices (dispatched with the step, never waited
    for at once); the loop stops when the sum cast one step earlier is positive, a value that every
    process reads alike. :meth:`now` is the blocking form, for the end of an epoch.
    """

    def __init__(self, flag, devices: Sequence[Any], axis: str):
        import jax

        self.flag = flag
        self.n_local = len(local_devices(devices))
        self._sum = jax.pmap(lambda x: jax.lax.psum(x, axis), axis_name=axis, devices=devices)
        self._cast: list[Any] = []

    def _vote(self):
        return self._sum(np.full((self.n_local,), float(self.flag.requested), np.float32))

    def cast(self) -> None:
        self._cast.append(self._vote())

    def agreed(self) -> bool:
        """True when the vote cast one step before the latest one says stop (consumes it)."""
        if len(self._cast) < 2:
            return False
        return float(np.asarray(self._cast.pop(0))[0]) > 0

    def now(self) -> bool:
        self._cast.clear()
        return float(np.asarray(self._vote())[0]) > 0
