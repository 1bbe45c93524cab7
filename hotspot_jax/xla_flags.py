"""XLA flags the project runs with by default, added to ``XLA_FLAGS`` by :func:`apply`.

XLA reads ``XLA_FLAGS`` once, when JAX creates its first backend, so the entry points call :func:`apply`
(through :func:`hotspot_jax.runtime.configure`) first thing; importing the package sets nothing. Only flags measured to help are here (docs/performance.md, optimisation log):

- ``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution`` (row 25): jax 0.10 sends every
  convolution to YNNPACK; XLA's own convolutions were faster for AlexNet and within noise for the other
  networks. Matrix products stay on YNNPACK, which was faster for them.
- ``--xla_cpu_use_fusion_emitters=false`` (row 32): XLA:CPU's loop, reduction and concatenation fusions
  compiled by its older LLVM IR emitters instead of the MLIR fusion emitters jax 0.10 uses by default.
  Training at 224 px was faster for all six networks; at 64 px and for inference it moved within noise.

Convolutions off YNNPACK also change which convolution kernel gradient is fastest:
:func:`convolutions_off_ynnpack` (from :mod:`architectures.ops.impl`) decides which one the CPU path uses (row 26).

A flag the user already put in ``XLA_FLAGS`` (by name) is left as it is. ``HOTSPOT_XLA_DEFAULTS=0``
turns the defaults off. They are only added for the jaxlib minor release they were measured with, since
XLA aborts the process on a flag it does not know.
"""

from __future__ import annotations

import os
from typing import Mapping, MutableMapping

from architectures.ops.impl import YNN_FUSION_FLAG, convolutions_off_ynnpack, flag_value  # noqa: F401

SWITCH_ENV = "HOTSPOT_XLA_DEFAULTS"
MEASURED_JAXLIB = "0.10."  # the flags below exist (and were measured) in this minor release
FUSION_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters"  # MLIR fusion emitters (true) or the LLVM IR ones
CPU_DEFAULTS: tuple[str, ...] = (
    f"{YNN_FUSION_FLAG}=-individual_convolution",
    f"{FUSION_EMITTERS_FLAG}=false",
)


def _name(flag: str) -> str:
    return flag.split("=", 1)[0].strip()


def with_defaults(xla_flags: str, defaults: tuple[str, ...] = CPU_DEFAULTS) -> str:
    """``xla_flags`` with every default whose name it does not already contain appended (pure)."""
    present = {_name(f) for f in xla_flags.split()}
    extra = [f for f in defaults if _name(f) not in present]
    return " ".join([xla_flags.strip(), *extra]).strip()


def wanted(environ: Mapping[str, str], jaxlib_version: str | None) -> bool:
    """Whether the defaults apply: not switched off, and the installed jaxlib is the measured one."""
    if environ.get(SWITCH_ENV, "1").strip() == "0":
        return False
    return bool(jaxlib_version) and jaxlib_version.startswith(MEASURED_JAXLIB)


def _jaxlib_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("jaxlib")
    except Exception:  # not installed, or metadata unreadable: add nothing
        return None


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
    """Add the defaults to ``environ["XLA_FLAGS"]`` when :func:`wanted`."""
    if wanted(environ, _jaxlib_version()):
        environ["XLA_FLAGS"] = with_defaults(environ.get("XLA_FLAGS", ""))
