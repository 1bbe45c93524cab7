"""One benchmark case (architecture x input size x dtype): both frameworks built, warmed up, timed interleaved.

Repetitions alternate JAX train, torch train, JAX inference, torch inference (the order rotating by one
each repetition), so a burst of load from elsewhere on a shared machine hits both frameworks alike;
the median repetition is reported. On the CPU torch may be timed at several thread counts
(``torch_threads``, the first being the cores JAX uses); the headline ratio is against the fastest of
them, so JAX is compared with PyTorch at its best, and the same-thread ratio is kept beside it. On CUDA
torch is timed once (``torch_threads == [None]``), its thread count does not apply.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from hotspot_jax.bench.batch import SyntheticBatch
from hotspot_jax.bench.jax_steps import JaxWorkload
from hotspot_jax.bench.timing import Measurement, load_average, run_until_settled
from hotspot_jax.errors import ConfigError

KINDS = ("train", "infer")


def check_case(arch: str, image_size: int) -> str:
    """The canonical architecture name; ConfigError if ``image_size`` is below its minimum."""
    import architectures

    spec = architectures.get(arch)
    if image_size < spec.min_input_size:
        raise ConfigError(f"--image-sizes {image_size} is below {spec.name}'s minimum input size {spec.min_input_size}")
    return spec.name


def _rate(flops: float | None, seconds: float, steps: int) -> float | None:
    return None if flops is None else flops * steps / seconds


def _torch_section(torch_wl: dict, m: dict, torch_device: str) -> dict[str, Any]:
    """The case's ``"torch"`` entry: per thread count on the CPU; one run (threads null) on CUDA."""
    def run(t, wl) -> dict[str, Any]:
        return {**{kind: m["torch", t, kind].to_dict() for kind in KINDS},
                "warmup_seconds": [round(s, 3) for s in wl.warmup_seconds]}

    if torch_device == "cpu":
        return {"layout": "NCHW", "device": "cpu", "threads": {str(t): run(t, wl) for t, wl in torch_wl.items()}}
    (t, wl), = torch_wl.items()
    return {"layout": "NCHW", "device": torch_device, "device_name": wl.device_name,
            "cudnn_benchmark": wl.torch.backends.cudnn.benchmark, "threads": None, **run(t, wl)}


def bench_case(
    arch: str,
    image_size: int,
    batch_size: int,
    *,
    reps: int,
    steps_per_rep: int,
    dtype: str = "float32",
    torch_threads: Sequence[int | None] = (),
    torch_device: str = "cpu",
    peak_flops: float | None = None,
    on_rep: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Images/s (median of ``reps``) of the JAX and torch steps for one case, their ratios and FLOP/s.

    ``torch_threads`` empty: JAX only; ``[None]``: torch once, its thread count untouched (CUDA).
    ``peak_flops``: the matmul peak in ``dtype`` that achieved FLOP/s are compared with.
    """
    import architectures

    if torch_device != "cpu" and len(torch_threads) > 1:
        raise ConfigError(f"torch on {torch_device} is timed once, not per thread count")
    name = check_case(arch, image_size)
    batch = SyntheticBatch.make(batch_size)
    images = batch_size * steps_per_rep
    jx = JaxWorkload(name, image_size, batch, dtype=dtype)
    flops = jx.analyse()
    jx.warm_up()
    runs: dict[tuple[str, int | None, str], tuple[Callable[[], None], Measurement]] = {}
    torch_wl = {}
    for t in torch_threads:
        from hotspot_jax.bench.torch_steps import TorchWorkload

        torch_wl[t] = TorchWorkload(architectures.get(name).torchvision_builder, image_size, batch, threads=t,
                                    dtype=dtype, device=torch_device)
        torch_wl[t].warm_up()
    for kind in KINDS:
        step = jx.train if kind == "train" else jx.infer
        runs["jax", None, kind] = ((lambda step=step: step(steps_per_rep)), Measurement(images))
        for t, wl in torch_wl.items():
            step = wl.train if kind == "train" else wl.infer
            runs["torch", t, kind] = ((lambda step=step: step(steps_per_rep)), Measurement(images))
    order = list(runs.values())
    # untimed passes of every workload until a pass no longer grows memory: with both frameworks in one
    # process (one malloc arena, hotspot_jax/hugepages.py) each one's steps can reshape the other's heap
    settle_passes = run_until_settled(lambda: [run() for run, _ in order], 1, max_calls=3)
    load_before = load_average()
    for r in range(reps):
        # rotated every repetition, so no workload always runs right after torch's OpenMP threads
        for run, measurement in order[r % len(order):] + order[: r % len(order)]:
            measurement.add(run)
        if on_rep:
            on_rep()

    m = {k: v[1] for k, v in runs.items()}
    out: dict[str, Any] = {
        "arch": name,
        "image_size": image_size,
        "dtype": dtype,
        "batch_size": batch_size,
        "steps_per_rep": steps_per_rep,
        "reps": reps,
        "load_before": load_before,
        "settle_passes": settle_passes,
        "jax": {
            **{kind: m["jax", None, kind].to_dict() for kind in KINDS},
            "warmup_seconds": [round(s, 3) for s in jx.warmup_seconds],
            **flops,
        },
    }
    step_flops = {"train": flops["flops_train_step"], "infer": flops["flops_infer_step"]}
    achieved: dict[str, Any] = {}
    for kind in KINDS:
        rate = _rate(step_flops[kind], m["jax", None, kind].median_seconds, steps_per_rep)
        achieved[f"jax_{kind}_flops_per_second"] = rate
        achieved[f"jax_{kind}_fraction_of_peak"] = rate / peak_flops if rate and peak_flops else None
    if torch_wl:
        out["torch"] = _torch_section(torch_wl, m, torch_device)
        same = torch_threads[0]
        ratio: dict[str, Any] = {}
        for kind in KINDS:
            best_t = max(torch_wl, key=lambda t: m["torch", t, kind].images_per_second)
            jax_ips = m["jax", None, kind].images_per_second
            ratio[kind] = jax_ips / m["torch", best_t, kind].images_per_second
            ratio[f"{kind}_torch_threads"] = best_t
            if torch_device == "cpu":
                ratio[f"{kind}_same_threads"] = jax_ips / m["torch", same, kind].images_per_second
            rate = _rate(step_flops[kind], m["torch", best_t, kind].median_seconds, steps_per_rep)
            achieved[f"torch_{kind}_flops_per_second"] = rate
            achieved[f"torch_{kind}_fraction_of_peak"] = rate / peak_flops if rate and peak_flops else None
        out["ratio"] = ratio
    out["achieved"] = achieved
    return out
