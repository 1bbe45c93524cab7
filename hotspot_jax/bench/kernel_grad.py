"""Per-layer timing of a convolution's kernel gradient: row 13's shifted products against XLA's own.

``python -m hotspot_jax.bench.kernel_grad`` times, for convolution shapes the six networks use (batch 32,
float32), the forward ``lax.conv``, XLA's kernel gradient and :func:`architectures.ops.conv.kernel_grad_by_shifts`,
each jit-compiled alone, median of a few calls. Which of the two gradients is faster depends on where XLA:CPU
runs convolutions (YNNPACK or its own path, ``XLA_FLAGS``), which is why ``architectures.ops.conv.KERNEL_GRAD``
defaults to ``auto``; this is the measurement behind that rule (docs/performance.md, row 26).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from hotspot_jax.bench.timing import Measurement
from hotspot_jax.errors import ConfigError

#: name: (map size, in channels, out channels, kernel, stride, padding), at the networks' 224 px and 64 px inputs
LAYERS: dict[str, tuple[int, int, int, int, int, int]] = {
    "alexnet_conv1_224": (224, 3, 64, 11, 4, 2),
    "alexnet_conv2_224": (27, 64, 192, 5, 1, 2),
    "alexnet_conv4_224": (13, 384, 256, 3, 1, 1),
    "resnet50_conv1_224": (224, 3, 64, 7, 2, 3),
    "resnet50_3x3_56": (56, 64, 64, 3, 1, 1),
    "resnet50_3x3_28": (28, 128, 128, 3, 1, 1),
    "resnet50_3x3_14": (14, 256, 256, 3, 1, 1),
    "resnet50_3x3_7": (7, 512, 512, 3, 1, 1),
    "squeezenet_expand_55": (55, 16, 64, 3, 1, 1),
    "squeezenet_expand_13": (13, 64, 256, 3, 1, 1),
    "googlenet_conv3_56": (56, 64, 192, 3, 1, 1),
    "googlenet_3x3_28": (28, 96, 128, 3, 1, 1),
    "resnet50_3x3_16_64px": (16, 64, 64, 3, 1, 1),
    "googlenet_3x3_8_64px": (8, 96, 128, 3, 1, 1),
}


def parse_layer(text: str) -> tuple[str, tuple[int, int, int, int, int, int]]:
    """A name from :data:`LAYERS`, or ``H,CIN,COUT,K,STRIDE,PAD`` (six positive integers, padding >= 0)."""
    if text in LAYERS:
        return text, LAYERS[text]
    parts = text.split(",")
    if len(parts) != 6 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--layer {text!r}: not a known layer ({', '.join(LAYERS)}) nor H,CIN,COUT,K,STRIDE,PAD")
    h, cin, cout, k, s, p = (int(x) for x in parts)
    if min(h, cin, cout, k, s) < 1 or h + 2 * p < k:
        raise ConfigError(f"--layer {text!r}: sizes must be positive and the kernel must fit the padded map")
    return text, (h, cin, cout, k, s, p)


def _median_ms(fn: Callable[..., Any], args: tuple, reps: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile and warm up
    m = Measurement(images=0)
    for _ in range(reps):
        m.add(lambda: jax.block_until_ready(fn(*args)))
    return 1000.0 * m.median_seconds


def time_layer(shape: tuple[int, int, int, int, int, int], batch: int = 32, reps: int = 5) -> dict[str, Any]:
    """Milliseconds of the forward convolution and of both kernel gradients for one layer shape, and the
    largest difference between the two gradients relative to their largest value (they must agree)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from architectures.ops import conv

    h, cin, cout, k, s, p = shape
    pads, strides = ((p, p), (p, p)), (s, s)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, h, h, cin), dtype=np.float32))
    kernel = jnp.asarray(0.05 * rng.standard_normal((k, k, cin, cout), dtype=np.float32))
    forward = jax.jit(lambda x_, w_: conv.conv_xla(x_, w_, strides, pads))
    dy = jnp.asarray(rng.standard_normal(forward(x, kernel).shape, dtype=np.float32))

    def xla_grad(x_, w_, dy_):
        return jax.vjp(lambda w2: conv.conv_xla(x_, w2, strides, pads), w_)[1](dy_)[0]

    shifts = jax.jit(lambda x_, dy_: conv.kernel_grad_by_shifts(x_, dy_, (k, k), pads, strides))
    xla = jax.jit(xla_grad)
    a, b = np.asarray(shifts(x, dy)), np.asarray(xla(x, kernel, dy))
    return {
        "forward_ms": round(_median_ms(forward, (x, kernel), reps), 2),
        "kernel_grad_shifts_ms": round(_median_ms(shifts, (x, dy), reps), 2),
        "kernel_grad_xla_ms": round(_median_ms(xla, (x, kernel, dy), reps), 2),
        "max_rel_diff": float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hotspot_jax.bench.kernel_grad", description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", action="append", metavar="NAME|H,CIN,COUT,K,STRIDE,PAD",
                   help=f"repeatable; default: all of {', '.join(LAYERS)}")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per measurement, median (default: 5)")
    p.add_argument("--json", metavar="OUT", help="also write the results here")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.reps < 1:
        p.error("--batch-size and --reps must be at least 1")
    try:
        layers = [parse_layer(t) for t in (args.layer or list(LAYERS))]
    except ConfigError as err:
        p.error(str(err))
    import jax

    from hotspot_jax.bench.machine import machine_info

    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, batch {args.batch_size}, median of {args.reps}")
    print("| layer | H, Cin, Cout, k, stride, pad | forward ms | kernel grad: shifts ms | XLA ms | shifts / XLA |")
    print("|---|---|---:|---:|---:|---:|")
    rows = []
    for name, shape in layers:
        r = time_layer(shape, args.batch_size, args.reps)
        rows.append({"layer": name, "shape": list(shape), **r})
        print(f"| {name} | {', '.join(map(str, shape))} | {r['forward_ms']:.1f} | {r['kernel_grad_shifts_ms']:.1f} | "
              f"{r['kernel_grad_xla_ms']:.1f} | {r['kernel_grad_shifts_ms'] / r['kernel_grad_xla_ms']:.2f} |",
              flush=True)
    if args.json:
        result = {"machine": machine_info(sys.argv), "backend": jax.default_backend(),
                  "xla_flags": os.environ.get("XLA_FLAGS", ""), "batch_size": args.batch_size, "reps": args.reps,
                  "layers": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from hotspot_jax.runtime import configure

    configure()  # XLA flags too; the memory setting scripts/benchmark.py measures in
    sys.exit(main())
