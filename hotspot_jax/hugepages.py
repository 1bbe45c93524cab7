"""Large host buffers on transparent huge pages: the scripts restart themselves once with glibc's
``glibc.malloc.hugetlb=1`` tunable, which must be set before the process starts.

Why: glibc serves every allocation above 32 MB with a fresh ``mmap``, so on the CPU each train step
page-faults its gradients and new parameters in 4 KiB at a time (AlexNet: about 500 MB a step). With
the tunable, glibc asks the kernel for 2 MiB pages on those mappings (``madvise``), 512 times fewer
faults (timings: docs/performance.md, row 11). It changes where memory comes from, never what is computed.

Freed memory is also kept in the process (``glibc.malloc.mmap_max=0``: large blocks come from the heap,
not from their own mappings; ``glibc.malloc.trim_threshold``: the heap is never given back;
``glibc.malloc.arena_max=1``: one heap for all threads, since other threads' heaps are unmapped when
empty), so the next step reuses the pages instead of faulting in fresh ones. On this project's VM a
fresh page costs far more once freed memory has gone back to the host: steps of the same compiled
training step varied several-fold, the system time all in the slow ones (docs/performance.md, row 33).

Off with ``HOTSPOT_HUGEPAGES=0``; nothing happens where it cannot help (not Linux, glibc older than
2.35, transparent huge pages set to ``never``) or when ``GLIBC_TUNABLES`` already names one of the tunables.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Mapping

TUNABLES: tuple[str, ...] = (
    "glibc.malloc.hugetlb=1",  # transparent huge pages for the heap and large blocks
    "glibc.malloc.mmap_max=0",  # no block gets its own mapping, so none is unmapped when freed
    f"glibc.malloc.trim_threshold={1 << 40}",  # the heap is never shrunk (1 TiB: no step frees that much)
    "glibc.malloc.arena_max=1",  # one heap: other threads' arenas would still give whole heaps back
)
TUNABLE = ":".join(TUNABLES)
SWITCH_ENV = "HOTSPOT_HUGEPAGES"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _glibc_at_least(version: str, minimum: tuple[int, int] = (2, 35)) -> bool:
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= minimum


def _thp_available(mode_file: Path = THP_MODE_FILE) -> bool:
    """True unless the kernel's transparent huge pages are missing or set to ``[never]``."""
    try:
        return "[never]" not in mode_file.read_text()
    except OSError:
        return False


def wanted(environ: Mapping[str, str], *, system: str, libc: tuple[str, str], thp: bool) -> bool:
    """Whether a restart with the tunable would help and has not happened yet (pure, for tests)."""
    if environ.get(SWITCH_ENV, "1").strip() == "0":
        return False
    current = environ.get("GLIBC_TUNABLES", "")
    if any(t.split("=")[0] in current for t in TUNABLES):  # the user (or our restart) chose already
        return False
    name, version = libc
    return system == "Linux" and name == "glibc" and _glibc_at_least(version) and thp


def environ_with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``environ`` with the tunable appended to any ``GLIBC_TUNABLES`` already there."""
    env = dict(environ)
    current = env.get("GLIBC_TUNABLES", "")
    env["GLIBC_TUNABLES"] = f"{current}:{TUNABLE}" if current else TUNABLE
    return env


def restart_with_hugepages() -> None:
    """Replace this process by the same command with the tunable set, when :func:`wanted`; else return.

    Call it first thing in a script's ``__main__`` block: ``execv`` keeps the process id (so a parent
    waiting on it or killing it sees no difference) and the interpreter's own options (``sys.orig_argv``).
    The signal mask survives ``execve`` too: the scripts hold SIGINT blocked across it, so a Ctrl-C during
    the restart waits for the new process's handler (hotspot_jax/cli.py, run_script).
    """
    if not wanted(os.environ, system=platform.system(), libc=platform.libc_ver(), thp=_thp_available()):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ_with_tunable(os.environ))
    except OSError:  # could not restart: carry on as we are, only slower
        return
