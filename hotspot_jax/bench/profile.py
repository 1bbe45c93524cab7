"""Where a compiled JAX step spends its time: a profiler trace summed per HLO operation kind and layer.

``python -m hotspot_jax.bench.profile --arch squeezenet1_1 --image-size 224`` traces a few of the
project's own training (or inference) steps with ``jax.profiler``, then joins the trace's per-operation
events with the compiled HLO, so each event gets its kind (``convolution``, ``dot``, a fusion named by
the heavy operation it contains, ``copy``...), its pass (forward, backward, from JAX's ``transpose(``
in the operation's name, or other) and the Flax module that emitted it. Time is summed per (kind, pass) and per
module, per step. This is how docs/performance.md's "why" is checked, instead of guessed.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time
from typing import Any, Iterable, Sequence

# Operations whose presence in a fusion names the fusion, most expensive first.
HEAVY_OPCODES = ("convolution", "dot", "custom-call", "select-and-scatter", "reduce-window", "scatter",
                 "reduce", "sort", "concatenate", "transpose", "dynamic-update-slice", "dynamic-slice")
# Operations that only contain others; their events overlap their children's, so they are not summed.
CONTAINER_OPCODES = ("while", "call", "conditional", "async-start", "async-done")

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s*\(")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"(?:^|[\s)}\]])([a-z][a-z0-9\-]*)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')


@dataclasses.dataclass(frozen=True)
class HloOp:
    """One instruction of the compiled module, as the profile needs it."""

    name: str
    opcode: str
    kind: str  # opcode, or "fusion[<heavy opcode>]"
    op_name: str  # JAX's metadata: jit(...)/<transforms>/<module path>/<primitive>
    computation: str

    @property
    def phase(self) -> str:
        """``backward`` (under JAX's transpose), ``forward`` (under jvp) or ``other`` (update, loss, layout)."""
        if "transpose(" in self.op_name:
            return "backward"
        return "forward" if "jvp(" in self.op_name else "other"

    @property
    def module(self) -> str:
        """The Flax module path inside the step (JAX's name stack minus transforms and the primitive)."""
        parts = [p for p in self.op_name.split("/")[:-1]
                 if p and not re.match(r"^(jit|pmap|jvp|transpose|vmap|remat|checkpoint|while|body|cond|"
                                       r"pjit|custom_vjp_call|custom_jvp_call|scan)\b", p)]
        if not self.op_name:
            return "(no metadata: layout copies XLA inserted)"
        return "/".join(parts) or "(step: loss, update, preprocessing)"


def parse_hlo(text: str) -> dict[str, HloOp]:
    """Every instruction of an HLO module's text by name, fusions named after their heaviest operation."""
    computations: dict[str, list[tuple[str, str, str, str]]] = collections.defaultdict(list)
    current = ""
    for line in text.splitlines():
        m = _COMPUTATION.match(line)
        if m and line.rstrip().endswith("{"):
            current = m.group(1)
            continue
        m = _INSTRUCTION.match(line)
        if not m or not current:
            continue
        name, rest = m.groups()
        op = _OPCODE.search(rest)
        if not op:
            continue
        calls = _CALLS.search(rest)
        op_name = _OP_NAME.search(rest)
        computations[current].append((name, op.group(1), calls.group(1) if calls else "",
                                      op_name.group(1) if op_name else ""))

    def heavy(computation: str, depth: int = 0) -> str:
        found = set()
        for _, opcode, calls, _ in computations.get(computation, ()):
            found.add(opcode)
            if calls and depth < 4:
                found.add(heavy(calls, depth + 1))
        return next((h for h in HEAVY_OPCODES if h in found), "elementwise")

    ops: dict[str, HloOp] = {}
    for computation, instructions in computations.items():
        for name, opcode, calls, op_name in instructions:
            kind = f"fusion[{heavy(calls)}]" if opcode == "fusion" and calls else opcode
            if not op_name and opcode == "fusion" and calls:  # fusions often carry no metadata: use the root's
                op_name = next((o for *_, o in reversed(computations.get(calls, ())) if o), "")
            ops[name] = HloOp(name, opcode, kind, op_name, computation)
    return ops


def trace_events(log_dir: str) -> list[dict[str, Any]]:
    """The complete ('X') events of the newest perfetto trace under ``log_dir``."""
    paths = sorted(glob.glob(os.path.join(log_dir, "**", "*.trace.json.gz"), recursive=True),
                   key=os.path.getmtime)
    if not paths:
        raise FileNotFoundError(f"no *.trace.json.gz under {log_dir}: did jax.profiler write a perfetto trace?")
    with gzip.open(paths[-1], "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X" and "dur" in e]


def summarise(events: Iterable[dict[str, Any]], ops: dict[str, HloOp], steps: int, top: int = 15) -> dict[str, Any]:
    """Milliseconds per step by (kind, pass), by module and by instruction; events not in ``ops`` are ignored."""
    by_kind: collections.Counter = collections.Counter()
    by_module: collections.Counter = collections.Counter()
    by_op: collections.Counter = collections.Counter()
    total = 0.0
    for event in events:
        op = ops.get(event["name"])
        if op is None or op.opcode in CONTAINER_OPCODES:
            continue
        ms = float(event["dur"]) / 1000.0 / steps  # trace durations are microseconds
        total += ms
        by_kind[(op.kind, op.phase)] += ms
        by_module[op.module] += ms
        by_op[op.name] += ms

    def rows(counter, label):
        return [{**label(k), "ms_per_step": round(v, 3), "share": round(v / total, 4) if total else 0.0}
                for k, v in counter.most_common(top)]

    return {
        "op_ms_per_step": round(total, 3),
        "by_kind": rows(by_kind, lambda k: {"kind": k[0], "pass": k[1]}),
        "by_module": rows(by_module, lambda k: {"module": k}),
        "by_op": rows(by_op, lambda k: {"op": k, "kind": ops[k].kind, "op_name": ops[k].op_name}),
    }


def profile_step(arch: str, image_size: int, batch_size: int = 32, steps: int = 3, kind: str = "train",
                 log_dir: str | None = None, top: int = 15) -> dict[str, Any]:
    """Trace ``steps`` of the library's train or eval step (after a warm-up) and summarise the trace."""
    import jax

    from hotspot_jax.bench.batch import SyntheticBatch
    from hotspot_jax.bench.jax_steps import JaxWorkload

    work = JaxWorkload(arch, image_size, SyntheticBatch.make(batch_size))
    if kind == "train":
        lowered = work.train_step.lower(work.state, work.images, work.labels, work.key)
        run = work.train
    else:
        lowered = work.eval_step.lower(work.state, work.images, work.labels)
        run = work.infer
    ops = parse_hlo(lowered.compile().as_text())
    run(1)  # compile and warm up outside the trace
    with tempfile.TemporaryDirectory() as tmp:
        out = log_dir or tmp
        with jax.profiler.trace(out, create_perfetto_trace=True):
            t0 = time.perf_counter()
            run(steps)
            wall_ms = (time.perf_counter() - t0) * 1000.0 / steps
        events = trace_events(out)
    summary = summarise(events, ops, steps, top)
    return {"arch": arch, "image_size": image_size, "batch_size": batch_size, "kind": kind, "steps": steps,
            "backend": jax.default_backend(), "wall_ms_per_step": round(wall_ms, 3), **summary}


#: printed with every profile: why the two totals differ
WALL_NOTE = ("Operations on two threads can overlap (sum above wall time); operations XLA:CPU runs "
             "asynchronously, such as its own convolutions on the intra-op pool (the default since row 25 of "
             "docs/performance.md), record only their dispatch (sum below wall time).")


def format_profile(result: dict[str, Any]) -> str:
    """Markdown tables of a profile summary."""
    total = result["op_ms_per_step"]
    lines = [f"{result['arch']} {result['image_size']} px, batch {result['batch_size']}, {result['kind']} step "
             f"({result['backend']}): {total:.1f} ms of operations per step, "
             f"{result.get('wall_ms_per_step', float('nan')):.1f} ms wall time per step (traced)", "",
             WALL_NOTE, "",
             "| kind | pass | ms/step | share |", "|---|---|---:|---:|"]
    lines += [f"| {r['kind']} | {r['pass']} | {r['ms_per_step']:.1f} | {100 * r['share']:.0f}% |"
              for r in result["by_kind"]]
    lines += ["", "| module | ms/step | share |", "|---|---:|---:|"]
    lines += [f"| {r['module']} | {r['ms_per_step']:.1f} | {100 * r['share']:.0f}% |" for r in result["by_module"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hotspot_jax.bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, help="architecture name, as scripts/train.py takes it")
    p.add_argument("--image-size", type=int, default=64, help="network input size in pixels (default: 64)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size (default: 32)")
    p.add_argument("--steps", type=int, default=3, help="traced steps, after one warm-up step (default: 3)")
    p.add_argument("--kind", choices=("train", "infer"), default="train", help="which step (default: train)")
    p.add_argument("--top", type=int, default=15, help="rows per table (default: 15)")
    p.add_argument("--trace-dir", help="keep the raw trace here (default: a temporary folder)")
    p.add_argument("--json", metavar="OUT", help="write the summary here as JSON")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        p.error("--steps and --batch-size must be at least 1")
    from hotspot_jax.bench.run import check_case
    from hotspot_jax.errors import ConfigError

    try:
        arch = check_case(args.arch, args.image_size)
    except ConfigError as err:
        p.error(str(err))
    result = profile_step(arch, args.image_size, args.batch_size, args.steps, args.kind,
                          args.trace_dir, args.top)
    print(format_profile(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from hotspot_jax.runtime import configure

    configure()  # XLA flags too; as scripts/benchmark.py: profiles of the memory setting the benchmark uses
    sys.exit(main())
