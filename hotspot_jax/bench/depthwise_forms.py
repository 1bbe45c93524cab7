"""``python -m hotspot_jax.bench.depthwise_forms``: the depthwise convolution's two forms timed layer by layer.

The two forms: the shifted multiply-adds with written-out gradients that the CPU takes
(``architectures.ops.depthwise.depthwise_conv_nhwc``) and XLA's grouped convolution (``lax.conv`` with
``feature_group_count == C``), which every other backend takes. Each is timed forward and backward
(input and kernel gradients) at MobileNetV2's depthwise layers (torchvision's inverted-residual table),
on whatever device JAX's default backend is, so the choice per backend rests on a measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp

from hotspot_jax.cli import run_cli

# MobileNetV2's depthwise layers at 224 px: (input height = width, channels, stride, how many)
MOBILENET_V2_LAYERS = ((112, 32, 1, 1), (112, 96, 2, 1), (56, 144, 1, 1), (56, 144, 2, 1), (28, 192, 1, 2),
                       (28, 192, 2, 1), (14, 384, 1, 4), (14, 576, 1, 2), (14, 576, 2, 1), (7, 960, 1, 3))


def forms():
    """name -> f(x, kernel, stride, pads), the two computations of one depthwise convolution."""
    from architectures.ops import depthwise

    return {"shifted": depthwise.depthwise_conv_nhwc, "lax.conv": depthwise._conv}


def _timed(fn, args, reps: int, steps: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        out = None
        for _ in range(steps):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def time_layer(form, batch: int, hw: int, channels: int, stride: int, dtype, reps: int, steps: int) -> float:
    """Median seconds of one forward + backward (both gradients) of ``form`` at one layer's shape."""
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(hw * channels + stride), 3)
    x = jax.random.normal(kx, (batch, hw, hw, channels), dtype)
    kernel = jax.random.normal(kk, (3, 3, 1, channels), dtype)
    pads = ((1, 1), (1, 1))
    out_hw = (hw + 2 - 3) // stride + 1
    g = jax.random.normal(kg, (batch, out_hw, out_hw, channels), dtype)

    @jax.jit
    def step(x, kernel, g):
        y, vjp = jax.vjp(lambda a, b: form(a, b, stride, pads), x, kernel)
        return y, vjp(g)

    return _timed(step, (x, kernel, g), reps, steps)


def measure(batch: int, image_size: int, dtype: str, reps: int, steps: int, layers: int | None) -> dict:
    """Per-layer and count-weighted total seconds of both forms, and the shifted/lax ratio."""
    jdtype = jnp.dtype(dtype)
    rows = []
    for hw224, channels, stride, count in MOBILENET_V2_LAYERS[:layers]:
        hw = max(1, round(hw224 * image_size / 224))
        secs = {name: time_layer(f, batch, hw, channels, stride, jdtype, reps, steps) for name, f in forms().items()}
        rows.append({"hw": hw, "channels": channels, "stride": stride, "count": count,
                     **{f"{k}_ms": round(v * 1e3, 4) for k, v in secs.items()}})
    totals = {name: sum(r[f"{name}_ms"] * r["count"] for r in rows) for name in forms()}
    return {"backend": jax.default_backend(), "device": jax.devices()[0].device_kind, "batch": batch,
            "image_size": image_size, "dtype": dtype, "reps": reps, "steps_per_rep": steps, "layers": rows,
            "total_ms": {k: round(v, 3) for k, v in totals.items()},
            "shifted_over_lax": round(totals["shifted"] / totals["lax.conv"], 3) if totals["lax.conv"] else None}


def table(result: dict) -> list[str]:
    """Markdown rows: one per layer, then the MobileNetV2 total (each layer times its count)."""
    lines = ["| input | channels | stride | count | shifted ms | lax.conv ms |", "|---|---:|---:|---:|---:|---:|"]
    for r in result["layers"]:
        lines.append(f"| {r['hw']}x{r['hw']} | {r['channels']} | {r['stride']} | {r['count']} | "
                     f"{r['shifted_ms']:.3f} | {r['lax.conv_ms']:.3f} |")
    t = result["total_ms"]
    lines.append(f"| MobileNetV2 total | | | | {t['shifted']:.2f} | {t['lax.conv']:.2f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hotspot_jax.bench.depthwise_forms", description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
    p.add_argument("--image-size", type=int, default=224, help="network input size; layer maps scale with it (default: 224)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="(default: float32)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions, the median is reported (default: 5)")
    p.add_argument("--steps", type=int, default=5, help="calls per repetition (default: 5)")
    p.add_argument("--layers", type=int, help="only the first N of MobileNetV2's depthwise layers")
    p.add_argument("--json", metavar="OUT", help="write the result here")
    args = p.parse_args(argv)
    result = measure(args.batch_size, args.image_size, args.dtype, args.reps, args.steps, args.layers)
    result["table"] = table(result)
    print("\n".join(result["table"]))
    print(f"shifted / lax.conv: {result['shifted_over_lax']} on {result['backend']} ({result['device']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    from hotspot_jax import xla_flags

    xla_flags.apply()  # the flags the networks are measured with
    sys.exit(run_cli(main))
