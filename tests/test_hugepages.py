"""The scripts' restart with glibc's huge-page tunable: when it applies, and that it really restarts once."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from hotspot_jax import hugepages

LINUX = dict(system="Linux", libc=("glibc", "2.36"), thp=True)


def test_wanted_on_linux_glibc_with_thp():
    assert hugepages.wanted({}, **LINUX)


@pytest.mark.parametrize(
    "environ, overrides",
    [
        ({"HOTSPOT_HUGEPAGES": "0"}, {}),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, {}),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0"}, {}),  # the user chose
        ({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=4"}, {}),
        ({}, {"system": "Darwin"}),
        ({}, {"libc": ("", "")}),
        ({}, {"libc": ("glibc", "2.31")}),
        ({}, {"thp": False}),
    ],
)
def test_not_wanted(environ, overrides):
    assert not hugepages.wanted(environ, **{**LINUX, **overrides})


def test_tunable_appended_to_existing_ones():
    assert hugepages.environ_with_tunable({})["GLIBC_TUNABLES"] == hugepages.TUNABLE
    assert hugepages.TUNABLE.startswith("glibc.malloc.hugetlb=1:glibc.malloc.mmap_max=0:")
    env = hugepages.environ_with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env == {"GLIBC_TUNABLES": f"glibc.malloc.arena_max=2:{hugepages.TUNABLE}", "X": "1"}


RSS_AFTER_FREE = textwrap.dedent("""
    import ctypes
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    def rss_mb():
        line = [l for l in open("/proc/self/status") if l.startswith("VmRSS")][0]
        return int(line.split()[1]) / 1024
    before = rss_mb()
    block = libc.malloc(256 << 20)
    ctypes.memset(block, 1, 256 << 20)
    libc.free(ctypes.c_void_p(block))
    print(rss_mb() - before)
""")


@pytest.mark.skipif(not hugepages.wanted({}, system=platform.system(), libc=platform.libc_ver(), thp=True),
                    reason="glibc tunables need Linux with glibc 2.35+")
def test_freed_memory_stays_in_the_process_only_with_the_tunables():
    """A freed 256 MB block is given back to the kernel by default, and kept with the tunables (row 33)."""
    def kept_mb(tunables: str) -> float:
        env = {**os.environ, "GLIBC_TUNABLES": tunables}
        out = subprocess.run([sys.executable, "-c", RSS_AFTER_FREE], env=env, capture_output=True, text=True,
                             timeout=60, check=True)
        return float(out.stdout.split()[-1])

    assert kept_mb("glibc.malloc.hugetlb=0") < 64
    assert kept_mb(hugepages.TUNABLE) > 192


def test_thp_mode_file(tmp_path):
    f = tmp_path / "enabled"
    f.write_text("always [madvise] never\n")
    assert hugepages._thp_available(f)
    f.write_text("always madvise [never]\n")
    assert not hugepages._thp_available(f)
    assert not hugepages._thp_available(tmp_path / "missing")


def test_restart_happens_once_keeps_pid_and_arguments(tmp_path):
    """A script calling restart_with_hugepages() runs its body once, after the restart, same pid and argv."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        print("start", os.getpid(), flush=True)
        from hotspot_jax.hugepages import restart_with_hugepages
        restart_with_hugepages()
        print("body", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), sys.argv[1:], flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "HOTSPOT_HUGEPAGES")}
    out = subprocess.run([sys.executable, "-u", str(script), "--x", "1"], capture_output=True, text=True,
                         env=env, timeout=120, check=True).stdout.splitlines()
    bodies = [line for line in out if line.startswith("body")]
    assert len(bodies) == 1
    starts = [line.split()[1] for line in out if line.startswith("start")]
    expected = hugepages.wanted(env, system=platform.system(), libc=platform.libc_ver(),
                                thp=hugepages._thp_available())
    assert len(starts) == (2 if expected else 1)
    assert len(set(starts)) == 1 and bodies[0].split()[1] == starts[0]  # execve keeps the process id
    assert bodies[0].endswith("['--x', '1']")
    assert (hugepages.TUNABLE in bodies[0]) == expected
    off = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True,
                         env={**env, "HOTSPOT_HUGEPAGES": "0"}).stdout.splitlines()
    assert sum(line.startswith("start") for line in off) == 1
