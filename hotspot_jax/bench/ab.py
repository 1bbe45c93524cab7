"""Interleaved A/B timing of step variants, one worker process per variant.

XLA flags are read once per process, so each variant (an environment such as ``XLA_FLAGS``, a code
patch such as the max-pool implementation, or the torchvision twin) runs in its own worker; the
workers compile, then the coordinator asks them in turn for one repetition each (A, B, C, A, B, C,
...), so a burst of load from elsewhere on a shared machine hits every variant alike. Reported: the
median images/s per variant and its ratio to the first variant, with the load of every repetition,
and the worker's CPU time per image (user + system, all threads), a steadier measure on a busy machine.
The order of the variants rotates from one repetition to the next.

    python -m hotspot_jax.bench.ab --arch squeezenet1_1 --image-size 64 \\
        --variant base --variant "fastpool|patch=max_pool=fast" \\
        --variant "onednn|env=XLA_FLAGS=--xla_cpu_use_onednn=true" --variant "torch|framework=torch"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from hotspot_jax.errors import ConfigError, HotspotError

KINDS = ("train", "infer")


# ----------------------------------------------------------------------------------------- code patches
def _reference_max_pool(x, window, stride, padding=0, ceil_mode=False, store_gradient=False, impl=None):
    """The max pool as first written: ``reduce_window`` differentiated by JAX (select_and_scatter)."""
    import jax
    import jax.numpy as jnp

    from architectures.ops import layers

    pads = [layers._pool_padding(x.shape[ax], window, stride, padding, ceil_mode) for ax in (1, 2)]
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1), ((0, 0), pads[0], pads[1], (0, 0))
    )


def _fast_max_pool(x, window, stride, padding=0, ceil_mode=False, store_gradient=False, impl=None):
    """The max pool with the dense first-maximum gradient of :mod:`architectures.ops.pooling`."""
    from architectures.ops import layers
    from architectures.ops.pooling import max_pool_nhwc

    pads = tuple(layers._pool_padding(x.shape[ax], window, stride, padding, ceil_mode) for ax in (1, 2))
    return max_pool_nhwc(x, window, stride, pads, impl="cpu")


def _patch_max_pool(impl: Callable) -> Callable[[], None]:
    def apply() -> None:
        from architectures import ops
        from architectures.ops import layers

        layers.max_pool = ops.max_pool = impl  # the architectures call it through either module

    return apply


def _reference_depthwise() -> None:
    """Depthwise convs differentiated by JAX (grouped-conv autodiff) instead of the dense custom VJP."""
    from architectures.ops import depthwise

    depthwise.depthwise_conv_nhwc = depthwise._conv  # looked up at call time by DepthwiseConv


def _grouped_forward_depthwise() -> None:
    """Depthwise forward as XLA's grouped convolution (``lax.conv``), the backward still the custom VJP."""
    from architectures.ops import depthwise

    depthwise._shifted_sum = depthwise._conv  # looked up at call time by the forward and its VJP


def _separate_filter_sums() -> None:
    """Depthwise filter gradient as k*k separate reductions (before the one variadic reduction)."""
    import jax.numpy as jnp

    from architectures.ops import depthwise

    def filter_grad(xp, g, kernel_hw, stride):
        acc = jnp.promote_types(g.dtype, jnp.float32)
        return jnp.stack([
            jnp.stack([
                jnp.sum(depthwise.window_slice(xp, i, j, stride, g.shape[1:3]).astype(acc) * g.astype(acc),
                        axis=(0, 1, 2))
                for j in range(kernel_hw[1])
            ])
            for i in range(kernel_hw[0])
        ])[:, :, None, :]

    depthwise._filter_grad = filter_grad  # looked up when the backward pass is traced


def _batch_filter_sums() -> None:
    """Depthwise filter gradient as one variadic reduction over the whole batch (before row 16's scan)."""
    import jax
    import jax.numpy as jnp

    from architectures.ops import depthwise

    def filter_grad(xp, g, kernel_hw, stride):
        kh, kw = kernel_hw
        acc = jnp.promote_types(g.dtype, jnp.float32)
        gf = g.astype(acc)
        terms = tuple(depthwise.window_slice(xp, i, j, stride, g.shape[1:3]).astype(acc) * gf
                      for i in range(kh) for j in range(kw))
        zeros = tuple(jnp.zeros((), acc) for _ in terms)
        sums = jax.lax.reduce(terms, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (0, 1))
        return jnp.stack([s.sum(0) for s in sums]).reshape(kh, kw, 1, -1)

    depthwise._filter_grad = filter_grad  # looked up when the backward pass is traced


def _always_pmean() -> None:
    """The train step's device mean as a pmean even on one device (before it was skipped there)."""
    import jax

    from hotspot_jax.train import step

    step.device_mean = lambda tree: jax.lax.pmean(tree, step.AXIS)  # looked up when the step is traced


def _update_per_device() -> None:
    """The optimiser update on the per-device arrays, as optax is usually called (before row 23)."""
    from hotspot_jax.train import step

    step.UPDATE_LAYOUT = "per-device"  # read when the step is traced


def _update_unordered() -> None:
    """Row 23's update on pmap's (1, ...) arrays, without the zero that orders it after the backward."""
    from hotspot_jax.train import step

    step.after_backward = lambda grads: grads  # looked up when the step is traced


PATCHES: dict[str, Callable[[], None]] = {
    "max_pool=reference": _patch_max_pool(_reference_max_pool),
    "max_pool=fast": _patch_max_pool(_fast_max_pool),
    "depthwise=reference": _reference_depthwise,
    "depthwise=grouped-forward": _grouped_forward_depthwise,
    "depthwise=separate-filter-sums": _separate_filter_sums,
    "depthwise=batch-filter-sums": _batch_filter_sums,
    "step=always-pmean": _always_pmean,
    "update=per-device": _update_per_device,
    "update=unordered": _update_unordered,
}

#: patches that are a choice of the model's implementation (architectures.ops.impl.Impl): the worker builds the
#: model with ``impl`` replaced by these fields, never by changing a module's globals
IMPL_PATCHES: dict[str, dict[str, Any]] = {
    "impl=reference": {"name": "reference"},
    "max_pool=gradient-not-stored": {"store_pool_gradient": False},
    "max_pool=after-relu": {"pool_before_relu": False},
    "max_pool=input-not-stored": {"store_pool_input": False},
    "batchnorm=centred": {"batchnorm_form": "centred"},
    "batchnorm=variance-autodiff": {"batchnorm_variance_grad": "autodiff"},
    "relu6=clip": {"relu6": "clip"},
    "alexnet=pool-then-multiply": {"fold_pooling": False},
    "conv=xla": {"conv": "xla"},
    "conv=patches": {"conv": "patches"},
    "conv=no-strided-patches": {"patches_for_strided": False},
    "conv=patches-up-to-64px": {"patches_max_output_pixels": 64},
    "conv=xla-kernel-grad": {"kernel_grad": "xla"},
    "conv=shift-kernel-grad": {"kernel_grad": "shifts"},
    "conv=first-layer-patches": {"first_layer_max_channels": 0},
    "conv=no-winograd": {"winograd_min_channels": None},
    "conv=bias-before-pool": {"bias_after_pool": False},
    "conv=first-layer-3x3-lax-conv": {"first_layer_min_kernel_pixels": 9},
    "fusion-barrier=off": {"fusion_barrier": False},
    "fusion-barrier=input-masks": {"mask_from_output": False},
}


def variant_impl(patches: Sequence[str]):
    """The backend's default implementation with every implementation patch in ``patches`` applied."""
    from architectures.ops.impl import resolve

    fields = {k: v for p in patches if p in IMPL_PATCHES for k, v in IMPL_PATCHES[p].items()}
    return dataclasses.replace(resolve(None), **fields)


# ------------------------------------------------------------------------------------------- variants
@dataclasses.dataclass
class Variant:
    """``NAME|env=VAR=VALUE|patch=PATCH|framework=jax|torch|threads=N``: what one worker process runs.

    ``threads`` (torch only) sets ``torch.set_num_threads``; default: the cores JAX uses.
    """

    name: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    patches: list[str] = dataclasses.field(default_factory=list)
    framework: str = "jax"
    threads: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Variant":
        name, *parts = text.split("|")
        if not name.strip():
            raise ConfigError(f"--variant {text!r}: the name before the first '|' is empty")
        v = cls(name.strip())
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep:
                raise ConfigError(f"--variant {text!r}: {part!r} is not key=value")
            if key == "env":
                var, sep, val = value.partition("=")
                if not sep:
                    raise ConfigError(f"--variant {text!r}: env={value!r} is not VAR=VALUE")
                v.env[var] = val
            elif key == "patch":
                if value not in PATCHES and value not in IMPL_PATCHES:
                    known = ", ".join([*PATCHES, *IMPL_PATCHES])
                    raise ConfigError(f"--variant {text!r}: unknown patch {value!r}; known: {known}")
                v.patches.append(value)
            elif key == "framework":
                if value not in ("jax", "torch"):
                    raise ConfigError(f"--variant {text!r}: framework must be jax or torch, got {value!r}")
                v.framework = value
            elif key == "threads":
                if not value.isdigit() or int(value) < 1:
                    raise ConfigError(f"--variant {text!r}: threads must be a positive integer, got {value!r}")
                v.threads = int(value)
            else:
                raise ConfigError(f"--variant {text!r}: unknown key {key!r} (env, patch, framework, threads)")
        if v.threads is not None and v.framework != "torch":
            raise ConfigError(f"--variant {text!r}: threads= applies to framework=torch only")
        return v


# --------------------------------------------------------------------------------------------- worker
def worker(arch: str, image_size: int, batch_size: int, steps: int, variant: Variant) -> None:
    """Build the variant's workload, say ``ready``, then time one repetition per stdin command."""
    for patch in variant.patches:
        if patch in PATCHES:
            PATCHES[patch]()
    from hotspot_jax.bench.batch import SyntheticBatch
    from hotspot_jax.bench.machine import cpu_cores

    batch = SyntheticBatch.make(batch_size)
    t0 = time.perf_counter()
    if variant.framework == "torch":
        import architectures

        from hotspot_jax.bench.torch_steps import TorchWorkload

        threads = variant.threads or cpu_cores()
        wl = TorchWorkload(architectures.get(arch).torchvision_builder, image_size, batch, threads=threads)
    else:
        from hotspot_jax.bench.jax_steps import JaxWorkload

        wl = JaxWorkload(arch, image_size, batch, impl=variant_impl(variant.patches))
    warm = wl.warm_up()
    print(json.dumps({"ready": time.perf_counter() - t0, "warmup_seconds": warm}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd not in KINDS:
            break
        run = (lambda: wl.train(steps)) if cmd == "train" else (lambda: wl.infer(steps))
        c, t = time.process_time(), time.perf_counter()
        run()
        print(json.dumps({"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c}), flush=True)


# ---------------------------------------------------------------------------------------- coordinator
def run_ab(
    arch: str, image_size: int, batch_size: int, steps: int, reps: int, variants: Sequence[Variant],
    kinds: Sequence[str] = KINDS, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Start one worker per variant, interleave ``reps`` repetitions of each kind, return the timings."""
    from hotspot_jax.bench.timing import load_average

    procs, logs = [], []
    try:
        for v in variants:
            err = tempfile.TemporaryFile(mode="w+")
            cmd = [sys.executable, "-m", "hotspot_jax.bench.ab", "--worker", json.dumps(dataclasses.asdict(v)),
                   "--arch", arch, "--image-size", str(image_size), "--batch-size", str(batch_size),
                   "--steps", str(steps)]
            env = {**os.environ, **v.env}
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, env=env))
            logs.append(err)

        def ask(i: int, cmd: str | None) -> dict[str, Any]:
            p = procs[i]
            line = ""
            try:
                if cmd is not None:
                    p.stdin.write(cmd + "\n")
                    p.stdin.flush()
                line = p.stdout.readline()
            except OSError:  # the worker's pipe is closed: it died
                pass
            if not line:
                logs[i].seek(0)
                tail = logs[i].read()[-3000:]
                code = p.wait(timeout=60)
                hint = (" (killed by signal 9: most likely out of memory; run fewer large variants at once)"
                        if code == -9 else "")
                raise HotspotError(f"worker {variants[i].name!r} died, exit code {code}{hint}:\n{tail}")
            return json.loads(line)

        ready = []
        for i, v in enumerate(variants):
            ready.append(ask(i, None))
            log(f"{v.name}: ready after {ready[-1]['ready']:.1f}s (warm-up {[round(s, 2) for s in ready[-1]['warmup_seconds']]})")
        times = {v.name: {k: [] for k in kinds} for v in variants}
        cpu = {v.name: {k: [] for k in kinds} for v in variants}
        loads = []
        for r in range(reps):
            # rotate the order every repetition: whoever runs right after another process (e.g. torch's
            # OpenMP threads still spinning) is not always the same variant
            order = [(r + k) % len(variants) for k in range(len(variants))]
            for kind in kinds:
                for i in order:
                    answer = ask(i, kind)
                    times[variants[i].name][kind].append(answer["seconds"])
                    cpu[variants[i].name][kind].append(answer["cpu_seconds"])
            loads.append(load_average())
            log(f"rep {r + 1}/{reps} done, load {loads[-1]}")
    finally:
        for p in procs:
            if p.poll() is None:
                try:
                    p.stdin.write("quit\n")
                    p.stdin.flush()
                except OSError:
                    pass
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
    images = batch_size * steps
    out: dict[str, Any] = {
        "arch": arch, "image_size": image_size, "batch_size": batch_size, "steps_per_rep": steps, "reps": reps,
        "load_per_rep": loads, "variants": [],
    }
    base = variants[0].name
    for v, rd in zip(variants, ready):
        entry: dict[str, Any] = {**dataclasses.asdict(v), "ready_seconds": rd["ready"], "warmup_seconds": rd["warmup_seconds"]}
        for kind in kinds:
            secs = times[v.name][kind]
            ips = images / statistics.median(secs)
            base_ips = images / statistics.median(times[base][kind])
            cpu_s = statistics.median(cpu[v.name][kind])
            entry[kind] = {
                "images_per_second": ips, "ratio_to_first": ips / base_ips, "rep_seconds": secs,
                # CPU time (all threads of the worker) is far less sensitive to other processes than wall time
                "cpu_ms_per_image": 1e3 * cpu_s / images,
                "cpu_ratio_to_first": statistics.median(cpu[base][kind]) / cpu_s,
                "rep_cpu_seconds": cpu[v.name][kind],
            }
        out["variants"].append(entry)
    return out


def format_ab(result: dict[str, Any]) -> str:
    """A markdown table: variant, median images/s and ratio to the first variant, per kind."""
    kinds = [k for k in KINDS if k in result["variants"][0]]
    head = ["variant"] + [f"{k} img/s" for k in kinds] + [f"{k} vs first" for k in kinds]
    head += [f"{k} CPU ms/img" for k in kinds] + [f"{k} CPU vs first" for k in kinds]
    lines = [
        f"{result['arch']} {result['image_size']}px batch {result['batch_size']}, {result['reps']} reps x "
        f"{result['steps_per_rep']} steps, load {min(result['load_per_rep']):.1f}-{max(result['load_per_rep']):.1f}",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ]
    for v in result["variants"]:
        cells = [v["name"]] + [f"{v[k]['images_per_second']:.1f}" for k in kinds]
        cells += [f"{v[k]['ratio_to_first']:.2f}" for k in kinds]
        cells += [f"{v[k]['cpu_ms_per_image']:.2f}" for k in kinds] + [f"{v[k]['cpu_ratio_to_first']:.2f}" for k in kinds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hotspot_jax.bench.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2, help="steps per repetition (default: 2)")
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (default: 7)")
    p.add_argument("--kinds", default="train,infer", help="train, infer or both (default: train,infer)")
    p.add_argument("--variant", action="append", default=[],
                   help="NAME|env=VAR=VALUE|patch=PATCH|framework=torch|threads=N (repeatable; the first is the base)")
    p.add_argument("--json", metavar="OUT", help="write the result here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.arch, args.image_size, args.batch_size, args.steps, Variant(**json.loads(args.worker)))
        return 0
    variants = [Variant.parse(t) for t in args.variant] or [Variant("base")]
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        raise ConfigError(f"--kinds must name train and/or infer, got {args.kinds!r}")
    from hotspot_jax.bench.machine import machine_info
    from hotspot_jax.bench.report import write_json

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result = run_ab(args.arch, args.image_size, args.batch_size, args.steps, args.reps, variants, kinds, log)
    result["machine"] = machine_info(["python", "-m", "hotspot_jax.bench.ab", *(argv or sys.argv[1:])])
    print(format_ab(result))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    from hotspot_jax.cli import run_cli
    from hotspot_jax.runtime import configure

    configure()  # XLA flags too; as scripts/benchmark.py: the workers inherit it, so A/Bs see the same memory

    sys.exit(run_cli(main))
