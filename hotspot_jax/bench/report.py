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


def _torch_best(case: dict[str, Any], kind: str) -> str:
    th, ratio = case.get("torch"), case.get("ratio", {})
    if not th:
        return "-"
    t = ratio[f"{kind}_torch_threads"]
    ips = th["threads"][str(t)][kind]["images_per_second"]
    return f"{ips:.1f} ({t}t)"


def case_row(case: dict[str, Any], peak: float | None) -> list[str]:
    """One table row: arch, size, batch, JAX/torch images/s, ratios, GFLOP/s and % of peak, load."""
    jx, ach, ratio = case["jax"], case.get("achieved", {}), case.get("ratio", {})
    loads = [x for th in [jx, *case.get("torch", {}).get("threads", {}).values()] for k in ("train", "infer")
             for x in th[k]["rep_load"]]
    gtrain, ginfer = ach.get("jax_train_flops_per_second"), ach.get("jax_infer_flops_per_second")
    return [
        case["arch"],
        str(case["image_size"]),
        str(case["batch_size"]),
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
    "arch", "px", "batch", "JAX train img/s", "torch train img/s (threads)", "train JAX/torch",
    "JAX infer img/s", "torch infer img/s (threads)", "infer JAX/torch", "JAX train GFLOP/s", "train % peak",
    "JAX infer GFLOP/s", "infer % peak", "load",
]


def markdown_table(results: Iterable[dict[str, Any]]) -> str:
    """A markdown table of every case of one or more benchmark results (each with its own peak)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for result in results:
        peak = result.get("peak", {}).get("flops_per_second")
        for case in result["cases"]:
            lines.append("| " + " | ".join(case_row(case, peak)) + " |")
    return "\n".join(lines)


def _cpu_details(d: dict[str, Any] | None) -> str:
    """`` (family 25 model 1; avx2 fma)`` from machine_info's cpu_details, or nothing for older files."""
    if not d:
        return ""
    return f" (family {d.get('family')} model {d.get('model')}; {' '.join(d.get('simd') or []) or 'no AVX2'})"


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Header lines printed above the table: machine, peak, versions."""
    m = result["machine"]
    peak = result.get("peak", {}).get("flops_per_second")
    v = m["versions"]
    return [
        f"{m['date']}  {m['cpu']}{_cpu_details(m.get('cpu_details'))} ({m['cpu_cores']} cores), backend {m['backend']}",
        f"jax {v.get('jax')}, flax {v.get('flax')}, torch {v.get('torch')}, torchvision {v.get('torchvision')}"
        + (f"; XLA_FLAGS={m['xla_flags']}" if m.get("xla_flags") else "")
        + (f"; GLIBC_TUNABLES={m['glibc_tunables']}" if m.get("glibc_tunables") else ""),
        f"measured float32 matmul peak: {_f(peak / 1e9 if peak else None, '.1f')} GFLOP/s",
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
