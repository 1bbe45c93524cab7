"""``scripts/reproduce.py``: train a recipe over architectures x seeds (resumable), then write its
tables and figures; ``--report-only`` regenerates them from the committed run summaries."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from hotspot_jax.errors import ConfigError
from hotspot_jax.reproduce.recipes import RECIPE_TASKS, RECIPES, get_recipe, with_overrides
from hotspot_jax.reproduce.study import STUDY_ARCHS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="reproduce.py",
        description="Reproduce the study's comparison (Table 3, Figures 10-12) for a recipe over several seeds, or "
        "compare the networks on another task (--task, --recipe classes12). "
        "Finished runs are skipped, unfinished ones resumed: rerun the same command to continue.",
    )
    arg = p.add_argument
    arg("--recipe", choices=tuple(RECIPES), help="; ".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
    arg("--archs", nargs="+", default=list(STUDY_ARCHS), metavar="ARCH",
        help=f"architectures (default: the study's six: {' '.join(STUDY_ARCHS)})")
    arg("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED", help="seeds (default: 0 1 2)")
    arg("--task", choices=RECIPE_TASKS,
        help="train and report this task with the recipe's settings (default: the recipe's own: classes12 for "
        "--recipe classes12, hotspot for the others); another task than the recipe's goes to "
        "results/<recipe>+task=<task>/ (docs/tasks.md)")
    arg("--set", nargs="+", default=[], metavar="KEY=VALUE", dest="overrides",
        help="change recipe settings to measure a lever, e.g. --set pretrain_epochs=0 (results go to "
        "results/<recipe>+KEY=VALUE/)")
    arg("--data", help="InfraredSolarModules zip or folder (default: $HOTSPOT_DATA)")
    arg("--pretrained", nargs="+", default=[], metavar="ARCH=FILE.pth",
        help="torchvision ImageNet checkpoints to start from, per architecture (default: none; results say "
        "how each run was initialised)")
    arg("--runs-dir", default="runs/reproduce", help="work directories with checkpoints (default: runs/reproduce, git-ignored)")
    arg("--results-dir", default="results", help="per-run JSON summaries, tables and figures (default: results)")
    arg("--docs", default="docs/results.md",
        help="markdown file whose generated block for the recipe is refreshed (default: docs/results.md; 'none' to skip)")
    arg("--report-only", action="store_true", help="train nothing: regenerate tables and figures from the summaries")
    arg("--no-progress", action="store_true", help="no progress bars")
    arg("--lever-table", nargs="+", metavar="FOLDER",
        help="train nothing: print one table of the runs in these results folders (e.g. best best+image_size=32), "
        "each compared with the first run of the same network and seed (or the one in --lever-baseline), and refresh "
        "the 'levers' block of --docs")
    arg("--lever-split", choices=("test", "val"), default="test",
        help="--lever-table on the test sets (final runs; McNemar against the baseline) or on the validation split "
        "(what settings are chosen on; refreshes the 'levers-val' block of --docs) (default: test)")
    arg("--cv", type=int, metavar="K",
        help="cross-validation for choosing settings: run each network and seed of the recipe as K fold runs inside the "
        "seed's training pool (validation = one fold, 'test' = the seed's validation split; the test sets are never "
        "read), from the recipe's shared pretraining (reused, not rerun); then the out-of-fold metrics per network and "
        "seed and their means, in results/<recipe>/cv<K>/. Needs a recipe without per-seed pretraining, e.g. best-v2 "
        "(default: off)")
    arg("--cv-compare", nargs=2, metavar=("FOLDER_A", "FOLDER_B"),
        help="train nothing: compare the cross-validation results of two results folders (e.g. best-v2 "
        "best-v2+image_size=96) over the networks and seeds both have: mean out-of-fold ROC AUC, accuracy, log loss, "
        "specificity at sensitivity >= 0.95, paired differences and how many pairs improved (with several K, pick one "
        "with --cv)")
    arg("--ensemble", nargs="+", metavar="FOLDER:ARCH[,ARCH]",
        help="train nothing: the per-seed mean-probability ensemble of networks from several results folders, e.g. "
        "best-v2+pretrain_epochs=80:shufflenet,squeezenet best-v2:googlenet,alexnet,mobilenet_v2 (the seeds all "
        "members have; threshold chosen on validation); writes results/ensembles/<--ensemble-name>.md and .json")
    arg("--ensemble-name", default="mixed", metavar="NAME",
        help="file name of the --ensemble report under <results-dir>/ensembles/ (default: mixed)")
    arg("--lever-baseline", metavar="FOLDER", help="results folder the lever rows are compared with (default: the first row of each network and seed)")
    from hotspot_jax.train import distributed

    distributed.add_options(p)
    return p


def parse_pretrained(items: Sequence[str]) -> dict[str, str]:
    """``ARCH=FILE`` pairs -> {canonical arch: file}; ConfigError naming a malformed item or missing file."""
    import architectures

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--pretrained expects ARCH=FILE.pth, got {item!r}")
        arch, path = item.split("=", 1)
        if not Path(path).is_file():
            raise ConfigError(f"--pretrained {arch}: file {path} does not exist")
        out[architectures.get(arch).name] = path
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    docs = None if args.docs.lower() == "none" else args.docs
    if args.lever_table:
        from hotspot_jax.reproduce.lever_table import lever_table, validation_lever_table
        from hotspot_jax.reproduce.report import update_docs

        if args.lever_split == "val":
            table, block = validation_lever_table(args.results_dir, args.lever_table), "levers-val"
        else:
            table, block = lever_table(args.results_dir, args.lever_table, args.lever_baseline), "levers"
        print(table)
        if docs:
            update_docs(Path(docs), block, table)
        return 0
    if args.cv_compare:
        from hotspot_jax.reproduce.cv import cv_compare

        print(cv_compare(args.results_dir, args.cv_compare[0], args.cv_compare[1], args.cv))
        return 0
    if args.ensemble:
        import shlex

        from hotspot_jax.reproduce.mixed_ensemble import mixed_ensemble, mixed_ensemble_report, write_mixed_ensemble

        result = mixed_ensemble(args.results_dir, args.ensemble)
        command = "python scripts/reproduce.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        md = write_mixed_ensemble(args.results_dir, args.ensemble_name, result, command)
        print(mixed_ensemble_report(result))
        print(f"wrote {md} and {md.with_suffix('.json')}", file=sys.stderr)
        return 0
    if not args.recipe:
        parser.error("--recipe is required (unless --lever-table, --cv-compare or --ensemble is given)")
    from hotspot_jax.train import distributed

    launch = distributed.launch_from_args(args)
    from hotspot_jax.reproduce import report
    from hotspot_jax.reproduce.runner import check_archs, run_grid

    base = get_recipe(args.recipe)
    overrides = list(args.overrides)
    if args.task:
        if any(item.partition("=")[0] == "task" for item in overrides):
            raise ConfigError("give the task once: --task or --set task=..., not both")
        if args.task != base.task:
            overrides.append(f"task={args.task}")
    recipe = with_overrides(base, overrides)
    archs = check_archs(args.archs)
    if any(s < 0 for s in args.seeds):
        raise ConfigError(f"--seeds must be non-negative, got {args.seeds}")

    if args.cv is not None:
        if launch is not None:
            raise ConfigError("--cv runs in one process; leave out the multi-process options")
        from hotspot_jax.reproduce.cv import check_cv_recipe

        check_cv_recipe(recipe, args.cv, archs, parse_pretrained(args.pretrained))  # before anything is written
        return _main_cv(args, recipe, archs)
    distributed.initialize(launch)  # before JAX computes anything; nothing without the multi-process options
    primary = distributed.is_primary()

    def log(msg: str) -> None:
        if primary:  # in a multi-process run, process 0 prints; the others only their errors
            print(msg, file=sys.stderr, flush=True)

    if not args.report_only:
        with distributed.failing_together(launch):
            res = run_grid(recipe, archs, args.seeds, data=args.data, runs_dir=args.runs_dir,
                           results_dir=args.results_dir, pretrained=parse_pretrained(args.pretrained),
                           progress=not args.no_progress, log=log)
        log(f"{recipe.name}: {len(res['done'])} run(s) done, {len(res['skipped'])} skipped"
            + (f", interrupted at {res['interrupted'][0]}" if res["interrupted"] else ""))
        if launch is not None:
            distributed.shutdown()  # every process got here: leave together
        if res["interrupted"]:
            return 130
    if not primary:
        return 0  # process 0 writes the report
    agg = report.build(args.results_dir, recipe.name, docs=docs)
    log(f"wrote {Path(args.results_dir) / recipe.name / 'report.md'} and figures ({len(agg['runs'])} runs)"
        + (f"; refreshed {docs}" if docs else ""))
    return 0


def _main_cv(args: argparse.Namespace, recipe, archs: list[str]) -> int:
    """``--cv K``: the fold runs (unless --report-only), the OOF summaries and the recipe's cv summary table."""
    from hotspot_jax.errors import DataError
    from hotspot_jax.reproduce.cv import cv_dir, cv_table, run_cv_grid, summarize_cv

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.report_only:
        summary = summarize_cv(recipe, archs, args.seeds, args.cv, args.results_dir, log)
    else:
        res = run_cv_grid(recipe, archs, args.seeds, args.cv, data=args.data, runs_dir=args.runs_dir,
                          results_dir=args.results_dir, pretrained=parse_pretrained(args.pretrained),
                          progress=not args.no_progress, log=log)
        log(f"{recipe.name} cv{args.cv}: {len(res['done'])} fold run(s) done, {len(res['skipped'])} skipped"
            + (f", interrupted at {res['interrupted'][0]}" if res["interrupted"] else ""))
        if res["interrupted"]:
            return 130
        summary = res.get("summary")
    if summary is None:
        raise DataError(f"no network and seed of {recipe.name} has all {args.cv} fold summaries under "
                        f"{cv_dir(args.results_dir, recipe.name, args.cv)}")
    print(cv_table(summary))
    log(f"wrote {cv_dir(args.results_dir, recipe.name, args.cv) / 'cv_summary.md'}")
    return 0
