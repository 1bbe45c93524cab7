"""Whether two versions of the code compile the same programs: the benchmark's own train and eval steps.

Each version's optimized HLO (``JaxWorkload(arch, px, SyntheticBatch.make(batch))``, ``train_step`` and
``eval_step`` ``.lower(...).compile().as_text()``, the scripts' ``XLA_FLAGS``) is dumped by a worker process
that imports that version's packages (``PYTHONPATH`` on its checkout, run from a folder without them), then
the two texts are compared with instruction names and metadata stripped, beside their opcode counts and
XLA's cost analysis (flops, bytes accessed). Identical programs take the same time, so a refactor that
leaves them identical needs no timing (docs/performance.md, "Plain architecture files (issue 26)").
"""

from __future__ import annotations

import argparse
import collections
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

STEPS = ("train", "infer")

# Run by the worker with the version's packages on PYTHONPATH; uses only APIs both versions have.
_DUMP_PROGRAM = r"""
import json, sys
from hotspot_jax.bench.batch import SyntheticBatch
from hotspot_jax.bench.jax_steps import JaxWorkload
arch, sizes, batch, out = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4]
for px in sizes:
    w = JaxWorkload(arch, px, SyntheticBatch.make(batch))
    compiled = {"train": w.train_step.lower(w.state, w.images, w.labels, w.key).compile(),
                "infer": w.eval_step.lower(w.state, w.images, w.labels).compile()}
    for step, c in compiled.items():
        stem = f"{out}/{arch}_{px}_{step}"
        with open(stem + ".hlo", "w") as f:
            f.write(c.as_text())
        cost = c.cost_analysis()
        cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
        with open(stem + ".cost.json", "w") as f:
            json.dump({"flops": cost.get("flops"), "bytes_accessed": cost.get("bytes accessed")}, f)
        print(arch, px, step, "dumped", flush=True)
"""


def _scripts_xla_flags(environ: dict[str, str]) -> str:
    """The ``XLA_FLAGS`` the scripts run with (this checkout's defaults added), given to both versions alike."""
    from hotspot_jax import xla_flags

    env = dict(environ)
    xla_flags.apply(env)
    return env.get("XLA_FLAGS", "")


def dump(code: Path, arch: str, sizes: Sequence[int], batch: int, out: Path, xla: str) -> None:
    """Dump ``arch``'s compiled steps at each size, as compiled by the packages under ``code``, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code.resolve()), "XLA_FLAGS": xla}
    with tempfile.TemporaryDirectory() as cwd:  # no packages in the working folder: PYTHONPATH decides
        subprocess.run([sys.executable, "-c", _DUMP_PROGRAM, arch, ",".join(map(str, sizes)), str(batch),
                        str(out.resolve())], cwd=cwd, env=env, check=True)


_META = re.compile(r",? metadata=\{[^{}]*\}")
_NAME = re.compile(r"%[\w.\-]+")
_HEADER = re.compile(r"^(?:ENTRY )?(%[\w.\-]+) ")
_HEADER_PARAM = re.compile(r"[\w.\-]+(?=: )")


def _is_header(line: str) -> bool:
    return bool(line) and not line.startswith(" ") and line.endswith("{") and not line.startswith("HloModule")


def normalise(text: str) -> list[str]:
    """The HLO text's lines with names replaced by their order of definition, without metadata or source tables.

    Computations become ``%cK`` (K-th defined) and instructions ``%N`` (N-th in their computation), so equal
    texts mean equal programs with the same data flow, whatever XLA or JAX named things.
    """
    raw = text.splitlines()
    computations = {}
    for line in raw:
        if _is_header(line) and (m := _HEADER.match(line)):
            computations.setdefault(m.group(1), f"%c{len(computations)}")
    local: dict[str, str] = {}

    def rename(match: re.Match) -> str:
        name = match.group(0)
        if name in computations:
            return computations[name]
        return local.setdefault(name, f"%{len(local)}")

    lines, in_preamble = [], False  # the source-location tables between the module line and the first computation
    for line in raw:
        line = _META.sub("", line).rstrip()
        if line.startswith("HloModule "):
            line, in_preamble = "HloModule" + line.partition(",")[1] + line.partition(",")[2], True
        elif _is_header(line):
            local, in_preamble = {}, False
            line = _HEADER_PARAM.sub("", line)
        elif in_preamble:
            continue
        line = _NAME.sub(rename, line)
        if line:
            lines.append(line)
    return lines


def _opcode(instruction: str) -> str:
    """The opcode of one HLO instruction line (``%x = TYPE opcode(...)...``)."""
    rest = instruction.split(" = ", 1)[1]
    if rest.startswith("("):  # a tuple type: skip to its matching parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0:
                rest = rest[i + 1:]
                break
    else:
        rest = rest.split(" ", 1)[1]
    match = re.match(r"\s*([\w\-]+)\(", rest)
    return match.group(1) if match else "?"


def op_counts(text: str) -> dict[str, collections.Counter]:
    """Opcode counts of the entry computation (fusions also by kind, custom calls by target) and of all."""
    entry, every = collections.Counter(), collections.Counter()
    in_entry = False
    for line in text.splitlines():
        if _is_header(line):
            in_entry = line.startswith("ENTRY ")
            continue
        ins = line.strip()
        if " = " not in ins or not ins.startswith(("%", "ROOT")):
            continue
        op = _opcode(ins)
        every[op] += 1
        if in_entry:
            entry[op] += 1
            if op == "fusion" and (kind := re.search(r"kind=(\w+)", ins)):
                entry[f"fusion:{kind.group(1)}"] += 1
            if op == "custom-call" and (target := re.search(r'custom_call_target="([^"]+)"', ins)):
                entry[f"custom-call:{target.group(1)}"] += 1
    return {"entry": entry, "all": every}


def compare(before: str, after: str) -> dict:
    """Whether two HLO texts are the same program up to names and metadata; if not, the lines and counts that differ."""
    a, b = normalise(before), normalise(after)
    ca, cb = op_counts(before), op_counts(after)
    diff = [d for d in difflib.unified_diff(a, b, lineterm="", n=0) if d[:1] in "+-" and d[:3] not in ("+++", "---")]
    deltas = {scope: {op: [ca[scope][op], cb[scope][op]] for op in sorted(set(ca[scope]) | set(cb[scope]))
                      if ca[scope][op] != cb[scope][op]} for scope in ("entry", "all")}
    return {"identical": a == b, "lines": [len(a), len(b)], "changed_lines": diff,
            "entry_ops": {op: n for op, n in sorted(cb["entry"].items())}, "op_count_changes": deltas}


def _fmt(x: float | None, unit: float, digits: int) -> str:
    return "n/a" if x is None else f"{x / unit:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hotspot_jax.bench.hlo_diff", description=__doc__.split("\n\n")[0],
                                epilog="example: git worktree add /tmp/old 4553d9b && python -m hotspot_jax.bench.hlo_diff "
                                       "--before /tmp/old --arch resnet50 --image-sizes 224,64 --out /tmp/hlo")
    p.add_argument("--before", type=Path, required=True, metavar="CHECKOUT", help="the older version's checkout")
    p.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[2], metavar="CHECKOUT",
                   help="the newer version's checkout (default: this one)")
    p.add_argument("--arch", action="append", required=True, help="registered architecture; repeatable")
    p.add_argument("--image-sizes", default="224,64", help="comma-separated input sizes (default: 224,64)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size (default: 32)")
    p.add_argument("--out", type=Path, required=True, help="folder for the dumps (before/, after/) and report.json")
    p.add_argument("--reuse", action="store_true", help="compare dumps already in --out instead of compiling again")
    p.add_argument("--show", type=int, default=20, metavar="N", help="print up to N changed lines per step (default: 20)")
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.image_sizes.split(",")]
    except ValueError:
        p.error(f"--image-sizes must be comma-separated integers, got {args.image_sizes!r}")
    for label, code in (("--before", args.before), ("--after", args.after)):
        if not (code / "hotspot_jax" / "bench" / "jax_steps.py").is_file():
            p.error(f"{label} {code} is not a checkout of this project (no hotspot_jax/bench/jax_steps.py)")
    if args.batch_size < 1 or min(sizes) < 1:
        p.error("--batch-size and --image-sizes must be positive")
    xla = _scripts_xla_flags(dict(os.environ))
    print(f"XLA_FLAGS={xla!r}, batch {args.batch_size}", flush=True)
    report = {"xla_flags": xla, "batch_size": args.batch_size, "before": str(args.before), "after": str(args.after),
              "results": []}
    print("| network | px | step | program | flops before / after (G) | bytes accessed before / after (GB) |")
    print("|---|---|---|---|---|---|")
    for arch in args.arch:
        for label, code in (("before", args.before), ("after", args.after)):
            folder = args.out / label
            if not (args.reuse and all((folder / f"{arch}_{px}_{s}.hlo").is_file() for px in sizes for s in STEPS)):
                try:
                    dump(code, arch, sizes, args.batch_size, folder, xla)
                except subprocess.CalledProcessError as err:
                    print(f"error: dumping {arch} from {code} failed (exit {err.returncode}); its output is above",
                          file=sys.stderr)
                    return 1
        for px in sizes:
            for step in STEPS:
                texts, costs = {}, {}
                for label in ("before", "after"):
                    stem = args.out / label / f"{arch}_{px}_{step}"
                    texts[label] = (stem.with_suffix(".hlo")).read_text()
                    costs[label] = json.loads(Path(f"{stem}.cost.json").read_text())
                r = compare(texts["before"], texts["after"])
                verdict = "identical" if r["identical"] else f"different ({len(r['changed_lines'])} lines)"
                print(f"| {arch} | {px} | {step} | {verdict} | "
                      f"{_fmt(costs['before']['flops'], 1e9, 2)} / {_fmt(costs['after']['flops'], 1e9, 2)} | "
                      f"{_fmt(costs['before']['bytes_accessed'], 1e9, 3)} / {_fmt(costs['after']['bytes_accessed'], 1e9, 3)} |",
                      flush=True)
                if not r["identical"]:
                    for scope, changes in r["op_count_changes"].items():
                        for op, (n_before, n_after) in changes.items():
                            print(f"    {scope} {op}: {n_before} -> {n_after}")
                    for line in r["changed_lines"][:args.show]:
                        print("    " + line[:300])
                report["results"].append({"arch": arch, "image_size": px, "step": step, "cost_before": costs["before"],
                                          "cost_after": costs["after"], **r})
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "report.json", "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
