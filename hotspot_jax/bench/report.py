"""The benchmark's outputs: a text/markdown table of images/s, ratios and FLOP/s, and the JSON file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from hotspot_jax.errors import ConfigError

SCHEMA = "hotspot_jax.benchmark/1"


def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def peak_flops(peak: dict[str, Any] | None, dtype: str = "float32") -> float | None:
    """The matmul peak FLOP/s a case in ``dtype`` is compared with, from a result's ``"peak"`` (float32 at its
    top level, as in every older file; other dtypes under their name); None where it has no such peak."""
    if not peak:
        return None
    return peak.get("flops_per_second") if dtype == "float32" else peak.get(dtype, {}).get("flops_per_second")


def case_dtype(case: dict[str, Any]) -> str:
    """The case's compute dtype; results written before ``--dtypes`` existed were all float32."""
    return case.get("dtype", "float32")


def torch_runs(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The case's torch runs by label: ``"1"``, ``"2"``... per CPU thread count, or the device (``"cuda"``)
    for a GPU run, which is timed once; {} for a JAX-only case."""
    th = case.get("torch")
    if not th:
        return {}
    if th.get("threads") is None:
        return {th.get("device", "cuda"): th}
    return th["threads"]


def _torch_best(case: dict[str, Any], kind: str) -> str:
    """torch's images/s of the run the ratio is against, with its thread count or device."""
    th, ratio = case.get("torch"), case.get("ratio", {})
    if not th:
        return "-"
    t = ratio[f"{kind}_torch_threads"]
    label, suffix = (str(t), f"{t}t") if t is not None else (th.get("device", "cuda"), th.get("device", "cuda"))
    ips = torch_runs(case)[label][kind]["images_per_second"]
    return f"{ips:.1f} ({suffix})"


def case_row(case: dict[str, Any], peak: float | None) -> list[str]:
    """One table row: arch, size, batch, dtype, JAX/torch images/s, ratios, GFLOP/s and % of ``peak`` (the
    matmul peak in the case's dtype), load."""
    jx, ach, ratio = case["jax"], case.get("achieved", {}), case.get("ratio", {})
    loads = [x for th in [jx, *torch_runs(case).values()] for k in ("train", "infer") for x in th[k]["rep_load"]]
    gtrain, ginfer = ach.get("jax_train_flops_per_second"), ach.get("jax_infer_flops_per_second")
    return [
        case["arch"],
        str(case["image_size"]),
        str(case["batch_size"]),
        case_dtype(case),
        _f(jx["train"]["images_per_second"], ".1f"),
        _torch_best(case, "train"),
        _f(ratio.get("train"), ".2f"),
        _f(jx["infer"]["images_per_second"], ".1f"),
        _torch_best(case, "infer"),
        _f(ratio.get("infer"), ".2f"),
        _f(gtrain / 1e9 if gtrain else None, ".1f"),
        _f(100 * gtrain / peak if gtrain and peak else None, ".0f"),
        _f(ginfer / 1e9 if ginfer else None, ".1f"),
        _f(100 * ginfer / peak if ginfer and peak else None, ".0f"),
        f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-",
    ]


HEADER = [
    "arch", "px", "batch", "dtype", "JAX train img/s", "torch train img/s (threads/device)", "train JAX/torch",
    "JAX infer img/s", "torch infer img/s (threads/device)", "infer JAX/torch", "JAX train GFLOP/s",
    "train % peak", "JAX infer GFLOP/s", "infer % peak", "load",
]


def markdown_table(results: Iterable[dict[str, Any]]) -> str:
    """A markdown table of every case of one or more benchmark results (each with its own peaks: a case's
    % of peak is against the matmul peak in its own dtype)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for result in results:
        for case in result["cases"]:
            peak = peak_flops(result.get("peak"), case_dtype(case))
            lines.append("| " + " | ".join(case_row(case, peak)) + " |")
    return "\n".join(lines)


def _cpu_details(d: dict[str, Any] | None) -> str:
    """`` (family 25 model 1; avx2 fma)`` from machine_info's cpu_details, or nothing for older files."""
    if not d:
        return ""
    return f" (family {d.get('family')} model {d.get('model')}; {' '.join(d.get('simd') or []) or 'no AVX2'})"


def _devices_line(result: dict[str, Any]) -> str:
    """`` JAX on gpu:NVIDIA H100 ...; torch on cuda (NVIDIA H100 ...)``: the devices both ran on, from a GPU
    result's machine and settings; nothing for CPU results (the CPU line says it all)."""
    m, settings = result["machine"], result.get("settings", {})
    torch_device = settings.get("torch_device", "cpu")
    if m.get("backend") == "cpu" and torch_device == "cpu":
        return ""
    torch_names = ", ".join(m.get("torch_cuda", {}).get("devices", []))
    return (f"; JAX on {', '.join(m.get('devices', []))}, torch on {torch_device}"
            + (f" ({torch_names})" if torch_names else ""))


def peaks_text(peak: dict[str, Any] | None) -> str:
    """``float32 123.4 GFLOP/s, bfloat16 456.7 GFLOP/s``: the measured matmul peaks of a result."""
    parts = []
    for dtype in ("float32", "bfloat16"):
        value = peak_flops(peak, dtype)
        if dtype == "float32" or value:
            parts.append(f"{dtype} {_f(value / 1e9 if value else None, '.1f')} GFLOP/s")
    return ", ".join(parts)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Header lines printed above the table: machine and devices, peaks, versions, dtypes."""
    m = result["machine"]
    v = m["versions"]
    dtypes = result.get("settings", {}).get("dtypes", ["float32"])
    return [
        f"{m['date']}  {m['cpu']}{_cpu_details(m.get('cpu_details'))} ({m['cpu_cores']} cores), backend {m['backend']}"
        + _devices_line(result),
        f"jax {v.get('jax')}, flax {v.get('flax')}, torch {v.get('torch')}, torchvision {v.get('torchvision')}"
        + (f"; XLA_FLAGS={m['xla_flags']}" if m.get("xla_flags") else "")
        + (f"; GLIBC_TUNABLES={m['glibc_tunables']}" if m.get("glibc_tunables") else ""),
        f"measured matmul peak: {peaks_text(result.get('peak'))}; dtypes: {', '.join(dtypes)}",
        f"command: {m['command']}",
    ]


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``path`` atomically (a temp file in the same directory, then rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise ConfigError(f"--json {path}: cannot write there ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, allow_nan=False, default=float)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """A benchmark JSON written by :func:`write_json`; ConfigError naming the file if it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such benchmark result") from None
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable benchmark JSON ({err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or "cases" not in data:
        raise ConfigError(f"{path}: not a benchmark result (expected schema {SCHEMA!r})")
    return data


def epoch_check_line(ec: dict[str, Any]) -> str:
    """One sentence on the epoch check: real epoch time vs steps x median step time."""
    return (
        f"epoch check ({ec['arch']} {ec['image_size']}px, batch {ec['batch_size']}, {ec['steps_per_epoch']} steps): "
        f"epoch 2 took {ec['epoch_seconds'][1]:.1f}s, steps x median step = {ec['steps_x_median_step_seconds']:.1f}s, "
        f"ratio {ec['epoch2_over_steps']:.2f} (1.00 = the input pipeline costs nothing)"
    )
