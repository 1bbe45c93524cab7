"""Per-layer timing of 3x3 stride-1 convolutions: XLA's against Winograd's F(2x2, 3x3) (row 42).

``python -m hotspot_jax.bench.winograd_layers`` times, for 3x3 layer shapes of the six networks (batch 32,
float32), the forward pass and the forward pass with both gradients, each jit-compiled alone, median of a few
calls: XLA's ``lax.conv``, :func:`architectures.ops.winograd.conv3x3` with its Winograd input gradient, and with
XLA's. These are the measurements behind ``architectures.ops.conv.WINOGRAD_MIN_CHANNELS`` and its map-size
thresholds (docs/performance.md, row 42). It restarts itself with the benchmark's memory settings: without
them, fresh intermediate buffers are page-faulted every call and Winograd read slower than XLA.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

from hotspot_jax.bench.kernel_grad import _median_ms
from hotspot_jax.errors import ConfigError

#: name: (map size, in channels, out channels) of a 3x3 stride-1 convolution with padding 1
LAYERS: dict[str, tuple[int, int, int]] = {
    "resnet50_56": (56, 64, 64),
    "resnet50_28": (28, 128, 128),
    "resnet50_14": (14, 256, 256),
    "resnet50_7": (7, 512, 512),
    "resnet50_8_64px": (8, 128, 128),
    "alexnet_conv3_13": (13, 192, 384),
    "alexnet_conv4_13": (13, 384, 256),
    "alexnet_conv5_13": (13, 256, 256),
    "googlenet_3a_28": (28, 96, 128),
    "googlenet_4b_14": (14, 112, 224),
    "googlenet_5b_7": (7, 192, 384),
}
VARIANTS = ("xla", "winograd", "winograd_xla_input_grad")


def parse_layer(text: str) -> tuple[str, tuple[int, int, int]]:
    """A name from :data:`LAYERS`, or ``H,CIN,COUT`` (three positive integers)."""
    if text in LAYERS:
        return text, LAYERS[text]
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"--layer {text!r}: not a known layer ({', '.join(LAYERS)}) nor H,CIN,COUT")
    h, cin, cout = (int(x) for x in parts)
    return text, (h, cin, cout)


def time_layer(shape: tuple[int, int, int], batch: int = 32, reps: int = 5) -> dict[str, Any]:
    """Milliseconds of the forward pass and of forward plus both gradients for each of :data:`VARIANTS`, and
    the largest difference of each Winograd variant's output and gradients from XLA's, relative to their
    largest value."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from architectures.ops import conv, winograd

    h, cin, cout = shape
    pads = ((1, 1), (1, 1))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, h, h, cin), dtype=np.float32))
    kernel = jnp.asarray(0.05 * rng.standard_normal((3, 3, cin, cout), dtype=np.float32))
    dy = jnp.asarray(rng.standard_normal((batch, h, h, cout), dtype=np.float32))
    functions = {
        "xla": lambda x_, k_: conv.conv_xla(x_, k_, (1, 1), pads),
        "winograd": lambda x_, k_: winograd.conv3x3(x_, k_, pads, "winograd"),
        "winograd_xla_input_grad": lambda x_, k_: winograd.conv3x3(x_, k_, pads, "xla"),
    }
    out: dict[str, Any] = {}
    reference = None
    for name, f in functions.items():
        forward = jax.jit(f)
        both = jax.jit(lambda x_, k_, dy_, f=f: (lambda y, vjp: (y, *vjp(dy_)))(*jax.vjp(f, x_, k_)))
        values = [np.asarray(v) for v in both(x, kernel, dy)]
        out[f"{name}_forward_ms"] = round(_median_ms(forward, (x, kernel), reps), 2)
        out[f"{name}_with_gradients_ms"] = round(_median_ms(both, (x, kernel, dy), reps), 2)
        if reference is None:
            reference = values
        else:
            out[f"{name}_max_rel_diff"] = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
                                              for a, b in zip(values, reference))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hotspot_jax.bench.winograd_layers",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", action="append", metavar="NAME|H,CIN,COUT",
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

    print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}, batch {args.batch_size}, median of {args.reps}; "
          "ms forward / forward with both gradients")
    print("| layer | H, Cin, Cout | XLA | Winograd | Winograd, XLA's input gradient |")
    print("|---|---|---:|---:|---:|")
    rows = []
    for name, shape in layers:
        r = time_layer(shape, args.batch_size, args.reps)
        rows.append({"layer": name, "shape": list(shape), **r})
        cells = [f"{r[f'{v}_forward_ms']:.1f} / {r[f'{v}_with_gradients_ms']:.1f}" for v in VARIANTS]
        print(f"| {name} | {', '.join(map(str, shape))} | {' | '.join(cells)} |", flush=True)
    if args.json:
        result = {"machine": machine_info(sys.argv), "backend": jax.default_backend(),
                  "xla_flags": os.environ.get("XLA_FLAGS", ""), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
                  "batch_size": args.batch_size, "reps": args.reps, "layers": rows}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from hotspot_jax.runtime import configure

    configure()  # XLA flags too; the memory setting scripts/benchmark.py measures in
    sys.exit(main())
