"""``scripts/benchmark.py``: JAX vs PyTorch images/s per architecture and input size, table and JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from hotspot_jax.bench import DEFAULT_ARCHS
from hotspot_jax.errors import ConfigError


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"{option} expects integers separated by commas, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{option} expects positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Images/s of the project's JAX train and inference steps and of the same torchvision "
        "models in PyTorch (same batch, input size and thread count), interleaved repetitions, the median; "
        "JAX/PyTorch ratios; achieved FLOP/s (XLA cost analysis) against a measured matmul peak.",
    )
    arg = p.add_argument
    arg("--archs", default=",".join(DEFAULT_ARCHS),
        help=f"comma-separated architectures or aliases (default: {','.join(DEFAULT_ARCHS)})")
    arg("--image-sizes", default="224,64", help="comma-separated square input sizes (default: 224,64)")
    arg("--batch-size", type=int, default=32, help="global batch size of every step (default: 32)")
    arg("--reps", type=int, default=5, help="timed repetitions per step; the median is reported (default: 5)")
    arg("--steps-per-rep", type=int, default=2, help="steps per timed repetition (default: 2)")
    arg("--json", metavar="OUT", help="write the full result (per-repetition times, load, machine) here")
    arg("--no-torch", action="store_true", help="time only the JAX steps")
    arg("--torch-threads", metavar="N,N",
        help="torch thread counts to time, the first being the headline's same-thread comparison; the ratio "
        "is against the fastest (default: the cores JAX uses, then 1 if that differs: on a busy machine "
        "torch's OpenMP is often faster with one thread)"),
    arg("--peak-size", type=int, default=2048, help="matrix size of the float32 peak measurement (default: 2048)")
    arg("--epoch-check", action="store_true",
        help="also run 2 real training epochs (library loop, real data) and compare the second epoch's time "
        "with steps x median step time (first architecture of --archs, --epoch-check-size px)")
    arg("--epoch-check-size", type=int, default=64, help="input size of the epoch check (default: 64, the cpu profile)")
    arg("--data", help="InfraredSolarModules zip or folder for --epoch-check (default: $HOTSPOT_DATA)")
    arg("--limit-train", type=int, metavar="N", help="--epoch-check on a seeded subset of N training images")
    arg("--limit-eval", type=int, default=256, metavar="N",
        help="--epoch-check: images per evaluation split (default: 256)")
    arg("--table", nargs="+", metavar="JSON", help="print the markdown table of existing result files and exit")
    arg("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark described by the options; print the table; write the JSON."""
    args = build_parser().parse_args(argv)
    from hotspot_jax.bench import report

    if args.table:
        results = [report.read_result(p) for p in args.table]
        for r in results:
            print("\n".join(report.summary_lines(r)))
        print(report.markdown_table(results))
        return 0
    sizes = _int_list(args.image_sizes, "--image-sizes")
    for option, value in (("--batch-size", args.batch_size), ("--reps", args.reps),
                          ("--steps-per-rep", args.steps_per_rep), ("--peak-size", args.peak_size)):
        if value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    from hotspot_jax.bench.run import check_case

    names = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not names:
        raise ConfigError("--archs is empty")
    cases = [(check_case(a, s), s) for a in names for s in sizes]  # every name and size checked up front
    if not args.no_torch:
        from hotspot_jax.bench.torch_steps import import_torch

        import_torch()

    from tqdm.auto import tqdm

    from hotspot_jax.bench.machine import cpu_cores, machine_info
    from hotspot_jax.bench.peak import measure_peak
    from hotspot_jax.bench.run import bench_case

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    threads = cpu_cores()
    if args.no_torch:
        torch_threads: list[int] = []
    elif args.torch_threads:
        torch_threads = _int_list(args.torch_threads, "--torch-threads")
    else:
        torch_threads = [threads] + ([1] if threads > 1 else [])
    result = {"schema": report.SCHEMA, "machine": machine_info(sys.argv if argv is None else ["benchmark.py", *argv])}
    result["settings"] = {
        "batch_size": args.batch_size, "reps": args.reps, "steps_per_rep": args.steps_per_rep,
        "jax_threads": threads, "torch_threads": torch_threads, "dtype": "float32",
        "input": "synthetic uint8 40x24 batch, resized inside every step",
    }
    result["peak"] = measure_peak(args.peak_size, with_torch=not args.no_torch, threads=threads)
    log(f"float32 matmul peak: {result['peak']['flops_per_second'] / 1e9:.1f} GFLOP/s")
    result["cases"] = []
    bar = tqdm(total=len(cases) * args.reps, desc="benchmark", unit="rep", disable=args.no_progress)
    for arch, size in cases:
        bar.set_postfix_str(f"{arch} {size}px")
        case = bench_case(
            arch, size, args.batch_size, reps=args.reps, steps_per_rep=args.steps_per_rep,
            torch_threads=torch_threads, peak_flops=result["peak"]["flops_per_second"],
            on_rep=lambda: bar.update(1),
        )
        result["cases"].append(case)
        if args.json:  # partial results survive an interrupted run
            report.write_json(args.json, result)
    bar.close()
    if args.epoch_check:
        from hotspot_jax.bench.epoch_check import epoch_check

        log(f"epoch check: {cases[0][0]} at {args.epoch_check_size}px, batch {args.batch_size}")
        result["epoch_check"] = epoch_check(
            cases[0][0], args.epoch_check_size, args.batch_size, data=args.data,
            limit_train=args.limit_train, limit_eval=args.limit_eval, log=log,
        )
    print("\n".join(report.summary_lines(result)))
    print(report.markdown_table([result]))
    if "epoch_check" in result:
        print(report.epoch_check_line(result["epoch_check"]))
    if args.json:
        report.write_json(args.json, result)
        log(f"wrote {args.json}")
    return 0
