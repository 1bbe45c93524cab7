"""Command line: convert a torchvision checkpoint into a Flax/orbax checkpoint directory.

python -m weights_convert --arch resnet50 --checkpoint resnet50-0676ba61.pth --out ckpt/resnet50 --num-classes 12
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hotspot_jax.cli import run_cli
from hotspot_jax.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every option documents its default)."""
    import architectures

    parser = argparse.ArgumentParser(
        prog="python -m weights_convert",
        description="Convert torchvision ImageNet weights (a .pth state_dict) into Flax variables saved as an "
        "orbax checkpoint with a meta.json. With --num-classes other than the checkpoint's, the classifier is "
        "replaced by a freshly initialised one (transfer learning).",
    )
    parser.add_argument(
        "--arch",
        help="architecture: " + ", ".join(architectures.names())
        + "; aliases: " + ", ".join(f"{a}={n}" for a, n in architectures.aliases().items())
        + " (default: the architecture of --weights; required with --checkpoint)",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE.pth", help="torchvision state_dict file (no default)")
    source.add_argument(
        "--weights",
        metavar="ARCH.TAG",
        help="published weight set, e.g. resnet50.tv_in1k: read from torchvision's cache, downloaded only "
        "when the network is reachable (no default)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output checkpoint directory (required)")
    parser.add_argument(
        "--num-classes", type=int, default=None,
        help="classes of the converted model; another value than the checkpoint's replaces the head "
        "(default: the checkpoint's, e.g. 1000)",
    )
    parser.add_argument(
        "--input-size", type=int, default=None,
        help="square input size used to trace the model (default: the architecture's, e.g. 224)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a replaced head's initialisation (default: 0)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing non-empty --out directory (default: off)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, convert, save; print one summary line."""
    args = build_parser().parse_args(argv)
    import jax

    import architectures
    from weights_convert.checkpoint import save_variables
    from weights_convert.convert import convert_with_info
    from weights_convert.fetch import resolve_weights
    from weights_convert.state_dict import file_sha256

    if args.num_classes is not None and args.num_classes < 1:
        raise ConfigError(f"--num-classes must be at least 1, got {args.num_classes}")
    meta = {}
    if args.weights:
        weight_spec = architectures.weight_spec(args.weights)
        weight_arch = architectures.get(args.weights.split(".", 1)[0]).name
        if args.arch and architectures.get(args.arch).name != weight_arch:
            raise ConfigError(f"--weights {args.weights} are for {weight_arch}, not --arch {args.arch}")
        arch = weight_arch
        path = resolve_weights(args.weights)
        meta.update(weights=weight_spec.name, torchvision_enum=weight_spec.torchvision_enum)
    else:
        if not args.arch:
            raise ConfigError("--arch is required with --checkpoint")
        arch = architectures.get(args.arch).name
        path = args.checkpoint
    variables, info = convert_with_info(
        arch, path, num_classes=args.num_classes, rng=jax.random.PRNGKey(args.seed), input_size=args.input_size
    )
    sha = file_sha256(path)
    meta.update(
        source_file=str(path),
        source_sha256=sha,
        source_num_classes=info.source_num_classes,
        head_replaced=info.head_replaced,
        head_seed=args.seed if info.head_replaced else None,
        input_size=info.input_size,
    )
    out = save_variables(
        args.out, variables, arch=arch, num_classes=info.num_classes, meta=meta, overwrite=args.overwrite
    )
    head = (f"new {info.num_classes}-class head (seed {args.seed})" if info.head_replaced
            else f"{info.num_classes}-class head converted")
    print(f"{arch}: {info.num_tensors} tensors from {path} (sha256 {sha[:12]}...), {head} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
