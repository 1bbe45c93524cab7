"""``python -m hotspot_jax.gpu_check --out DIR``: the one-shot GPU check (see the package doc)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from hotspot_jax.cli import run_cli
from hotspot_jax.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hotspot_jax.gpu_check",
        description="Run the GPU check's stages (environment, the study's SqueezeNet 1.1 run, torch parity, "
        "depthwise forms, JAX vs PyTorch benchmark), each with a time limit, and write logs, results and "
        "summary.md under --out.",
    )
    p.add_argument("--out", required=True, help="output folder (created; files in it are replaced)")
    p.add_argument("--data", help="InfraredSolarModules zip or folder (default: $HOTSPOT_DATA)")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all stages together (default: 480)")
    p.add_argument("--stages", help="comma-separated subset of: environment,train,parity,depthwise,benchmark")
    p.add_argument("--tiny", action="store_true", help="toy sizes: a smoke test that runs on a CPU in minutes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from hotspot_jax.gpu_check import runner, summary
    from hotspot_jax.gpu_check.stages import stages

    args = build_parser().parse_args(argv)
    data = args.data or os.environ.get("HOTSPOT_DATA")
    if not data or not Path(data).exists():
        raise ConfigError(f"the dataset was not found ({data or 'no --data and no HOTSPOT_DATA'}); "
                          "pass --data PATH/InfraredSolarModules.zip")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    chosen = stages(out, str(Path(data).resolve()), sys.executable, tiny=args.tiny)
    if args.stages:
        wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
        unknown = sorted(set(wanted) - {s.name for s in chosen})
        if unknown:
            raise ConfigError(f"--stages: unknown {', '.join(unknown)}; use {', '.join(s.name for s in chosen)}")
        chosen = [s for s in chosen if s.name in wanted]
    results = runner.run_stages(chosen, out, ROOT, args.budget_s)
    result = summary.collect(out, results)
    summary.write(out, result)
    print((out / "summary.md").read_text())
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
