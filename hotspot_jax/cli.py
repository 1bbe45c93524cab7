"""Shared plumbing for command-line entry points: clean errors instead of tracebacks, Ctrl-C as exit 130.

Only the standard library is imported here, so a script that calls :func:`run_script` first thing can
catch a Ctrl-C from its very start (imports of JAX and friends included).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Callable, Sequence

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C
_SIGINT = {"count": 0}  # Ctrl-Cs seen by run_script's handler


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
            *, leaving: bool = False) -> int:
    """Run ``main(argv)``; print a HotspotError as one ``error:`` line (exit 2), Ctrl-C as exit 130.

    ``leaving``: the process ends next (a script), so a second Ctrl-C is ignored from the first on.
    """
    from hotspot_jax.errors import HotspotError

    try:
        code = main(argv)
    except HotspotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if leaving:
            _ignore_sigint()  # a second Ctrl-C while we leave would print a traceback
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return INTERRUPTED
    return int(code or 0)


def run_script(target: str | Callable[[Sequence[str] | None], int | None], *, runtime: bool = False,
               preload: Sequence[str] = ("numpy", "jax")) -> None:
    """A script's whole ``__main__``: run ``"package.module:function"`` (or a function) under :func:`run_cli`.

    Ctrl-C at any moment is one line and exit 130 (tests/test_interrupt.py):

    - ``runtime``: first apply the measured process settings (XLA flags, the huge-pages restart:
      :func:`hotspot_jax.runtime.configure`);
    - the script blocks SIGINT on its first line; the huge-pages restart, the ``preload`` modules and the
      target's module are imported while it is held (a KeyboardInterrupt inside a C extension's import
      came back as an ImportError traceback, or aborted the interpreter), then the handler is installed
      and a held Ctrl-C arrives;
    - a failed or interrupted run leaves with ``os._exit`` after flushing its output: tearing the
      interpreter down while XLA's or orbax's threads were still busy segfaulted in 8 of 10 tries
      (issue 28). Every file a run writes is complete or absent (atomic renames, synchronous
      checkpoints), so nothing is lost by skipping the teardown.
    """
    try:
        if runtime:
            from hotspot_jax.runtime import configure

            configure()  # XLA flags, and large buffers on huge pages: see hotspot_jax/runtime.py
        for name in preload:
            importlib.import_module(name)
        if callable(target):
            main = target
        else:
            module, _, name = target.partition(":")
            main = getattr(importlib.import_module(module), name or "main")
        _guard_sigint()
        code = run_cli(main, leaving=True)
    except KeyboardInterrupt:  # between run_cli's own lines: still one line, still 130
        _interrupted_now()
    except Exception:
        # a KeyboardInterrupt raised inside a C extension comes back as another exception (ImportError):
        # after a Ctrl-C, whatever broke is the Ctrl-C's doing
        if _SIGINT["count"]:
            _interrupted_now()
        raise
    if code == 0:
        _ignore_sigint()  # the work is done: a Ctrl-C now changes nothing
        sys.exit(0)
    _leave(code)


def _leave(code: int) -> None:
    """Flush and end the process now, without the interpreter's teardown (see :func:`run_script`)."""
    _ignore_sigint()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _interrupted_now() -> None:
    try:
        print("interrupted; rerun the same command to continue", file=sys.stderr)
    finally:
        _leave(INTERRUPTED)


def _guard_sigint() -> None:
    """Ctrl-C raises KeyboardInterrupt (so ``finally`` blocks tidy up), but is never lost.

    Python raises it wherever the main thread is, also inside a weakref callback or a ``__del__``,
    where it is only printed ("Exception ignored in ...") and the run goes on (seen in issue 28 during
    the final evaluation). Such a swallowed interrupt, and a second Ctrl-C, end the process at once.
    """
    def handler(signum, frame):
        _SIGINT["count"] += 1
        if _SIGINT["count"] > 1:
            _interrupted_now()
        raise KeyboardInterrupt

    default_hook = sys.unraisablehook

    def unraisable(info):
        if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
            _interrupted_now()
        default_hook(info)

    signal.signal(signal.SIGINT, handler)
    sys.unraisablehook = unraisable
    # a Ctrl-C held back by the script's first line (or across the huge-pages restart) arrives now
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _ignore_sigint() -> None:
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread (library use): nothing to do
        pass
