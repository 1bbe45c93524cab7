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


DTYPES = ("float32", "bfloat16")


def _dtype_list(text: str) -> list[str]:
    """The compute dtypes of ``--dtypes`` in the given order, each once; ConfigError for an unknown one."""
    values = list(dict.fromkeys(v for v in text.replace(",", " ").split()))
    bad = [v for v in values if v not in DTYPES]
    if not values or bad:
        raise ConfigError(f"--dtypes expects {' or '.join(DTYPES)} separated by commas, got {text!r}")
    return values


def _torch_threads(args: argparse.Namespace, torch_device: str | None, cores: int) -> list[int | None]:
    """torch's thread counts to time: none without torch, ``[None]`` (timed once) on CUDA, else the option
    or the cores JAX uses, then 1 if that differs."""
    if torch_device is None:
        return []
    if torch_device != "cpu":
        if args.torch_threads:
            raise ConfigError(f"--torch-threads applies to torch on the CPU; torch runs on {torch_device} "
                              "(--torch-device cpu times it on the CPU)")
        return [None]
    if args.torch_threads:
        return list(_int_list(args.torch_threads, "--torch-threads"))
    return [cores] + ([1] if cores > 1 else [])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmark.py",
        description="Images/s of the project's JAX train and inference steps and of the same torchvision "
        "models in PyTorch (same batch, input size, compute dtype, and thread count or GPU), interleaved "
        "repetitions, the median; JAX/PyTorch ratios; achieved FLOP/s (XLA cost analysis) against a "
        "measured matmul peak in the same dtype. On a GPU machine JAX runs on its GPU and torch on the same "
        "one (--torch-device auto).",
    )
    arg = p.add_argument
    arg("--archs", default=",".join(DEFAULT_ARCHS),
        help=f"comma-separated architectures or aliases (default: {','.join(DEFAULT_ARCHS)})")
    arg("--image-sizes", default="224,64", help="comma-separated square input sizes (default: 224,64)")
    arg("--batch-size", type=int, default=32, help="global batch size of every step (default: 32)")
    arg("--reps", type=int, default=5, help="timed repetitions per step; the median is reported (default: 5)")
    arg("--steps-per-rep", type=int, default=2, help="steps per timed repetition (default: 2)")
    arg("--dtypes", default="float32",
        help="comma-separated compute dtypes, each a case of its own: float32, bfloat16 (JAX: the models' "
        "compute dtype; torch: torch.autocast around forward and loss; parameters stay float32 in both) "
        "(default: float32)")
    arg("--torch-device", default="auto", metavar="{auto,cpu,cuda}",
        help="where torch runs: cuda (the GPU JAX uses; timed once, no thread counts), cpu, or auto = cuda "
        "when JAX's backend is a GPU and torch sees CUDA, else cpu (default: auto)")
    arg("--json", metavar="OUT", help="write the full result (per-repetition times, load, machine) here")
    arg("--no-torch", action="store_true", help="time only the JAX steps")
    arg("--torch-threads", metavar="N,N",
        help="torch thread counts to time on the CPU, the first being the headline's same-thread comparison; "
        "the ratio is against the fastest (default: the cores JAX uses, then 1 if that differs: on a busy "
        "machine torch's OpenMP is often faster with one thread)"),
    arg("--peak-size", type=int,
        help="matrix size of the matmul peak measurements (float32; also bfloat16 on a GPU or with "
        "--dtypes bfloat16) (default: 2048 on a CPU, 8192 on a GPU)")
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


def _settings(args: argparse.Namespace, dtypes: list[str], threads: int, torch_device: str | None,
              torch_threads: list[int | None]) -> dict:
    """The JSON's ``settings``: what every case shares (torch's thread counts are null on CUDA, where they
    do not apply; there its float32 switches, TF32 among them, are recorded)."""
    out = {
        "batch_size": args.batch_size, "reps": args.reps, "steps_per_rep": args.steps_per_rep,
        "dtypes": dtypes, "jax_threads": threads, "torch_device": torch_device,
        "torch_threads": None if torch_device not in (None, "cpu") else torch_threads,
        "input": "synthetic uint8 40x24 batch, resized inside every step",
    }
    if torch_device == "cuda":
        import jax

        from hotspot_jax.bench.torch_steps import precision_settings

        out["torch_cuda_precision"] = precision_settings()
        out["jax_default_matmul_precision"] = jax.config.jax_default_matmul_precision
    return out


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
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")
    from hotspot_jax.bench.run import check_case

    dtypes = _dtype_list(args.dtypes)
    names = [a.strip() for a in args.archs.split(",") if a.strip()]
    if not names:
        raise ConfigError("--archs is empty")
    # every name and size checked up front
    cases = [(check_case(a, s), s, d) for a in names for s in sizes for d in dtypes]
    from hotspot_jax.bench.torch_steps import TORCH_DEVICES, resolve_device

    if args.torch_device not in TORCH_DEVICES:
        raise ConfigError(f"--torch-device expects one of {', '.join(TORCH_DEVICES)}, got {args.torch_device!r}")
    import jax

    torch_device = None
    if not args.no_torch:
        torch_device = resolve_device(args.torch_device, jax.default_backend())

    from tqdm.auto import tqdm

    from hotspot_jax.bench.machine import cpu_cores, machine_info
    from hotspot_jax.bench.peak import default_size, measure_peak
    from hotspot_jax.bench.run import bench_case

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    threads = cpu_cores()
    torch_threads = _torch_threads(args, torch_device, threads)
    if torch_device == "cuda" and jax.local_device_count() > 1:
        log(f"warning: JAX splits each batch over {jax.local_device_count()} GPUs, torch runs on one; "
            "CUDA_VISIBLE_DEVICES=0 compares one GPU with one")
    command = sys.argv if argv is None else ["benchmark.py", *argv]
    result = {"schema": report.SCHEMA, "machine": machine_info(command, torch_device=torch_device)}
    result["settings"] = _settings(args, dtypes, threads, torch_device, torch_threads)
    result["peak"] = measure_peak(args.peak_size or default_size(), with_torch=torch_device is not None,
                                  threads=threads, dtypes=dtypes, torch_device=torch_device or "cpu")
    log(f"matmul peak: {report.peaks_text(result['peak'])}")
    result["cases"] = []
    bar = tqdm(total=len(cases) * args.reps, desc="benchmark", unit="rep", disable=args.no_progress)
    for arch, size, dtype in cases:
        bar.set_postfix_str(f"{arch} {size}px {dtype}")
        case = bench_case(
            arch, size, args.batch_size, reps=args.reps, steps_per_rep=args.steps_per_rep, dtype=dtype,
            torch_threads=torch_threads, torch_device=torch_device or "cpu",
            peak_flops=report.peak_flops(result["peak"], dtype), on_rep=lambda: bar.update(1),
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
