"""Turn a recipe's committed run summaries into its report: ``results/<recipe>/report.md`` (tables),
``aggregate.json`` (the numbers behind them) and the figures; optionally refresh the generated
block of ``docs/results.md`` between ``<!-- BEGIN generated:<recipe> -->`` and ``<!-- END generated:<recipe> -->``.

The report follows the runs' task: ``hotspot`` the study's Table 3 and Figures 10-12 (plus the realistic test
set), ``anomaly`` the same binary tables without the study's rows, ``classes12`` its own
(:mod:`hotspot_jax.reproduce.classes12`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hotspot_jax.errors import DataError
from hotspot_jax.reproduce import tables
from hotspot_jax.reproduce.aggregate import (
    REALISTIC_METRICS,
    by_arch,
    paired_comparisons,
    shared_errors,
    summarize,
)
from hotspot_jax.reproduce.ensemble import operating_points
from hotspot_jax.reproduce.figures import write_figures
from hotspot_jax.reproduce.recipes import RECIPES
from hotspot_jax.reproduce.runner import load_results, run_task, write_json
from hotspot_jax.reproduce.study import STUDY_ARCHS

METHOD = (
    "Intervals: *mean ± sd [95% interval]* over seeds, where each seed draws a new split and a new "
    "initialisation; the interval is Student's t on the seed means (sd with ddof=1), clipped to the "
    "metric's range (0-1; 0-1000 for false alarms). The pooled view adds "
    "the test counts of all seeds and gives a Wilson score interval; it only covers binomial noise of the "
    "finite test sets (and seeds' test sets share images), so it is narrower than the seed interval. "
    "Paired comparisons use the same seeds (same split and test images) for both networks: a paired t "
    "interval on the accuracy differences and an exact McNemar test on the pooled per-image disagreements."
)


def build(results_dir: str | Path, recipe: str, docs: str | Path | None = None, figure_link_root: str = "..",
          description: str | None = None) -> dict[str, Any]:
    """Write report.md, aggregate.json and figures for ``recipe``; update ``docs`` if given. Return aggregate."""
    results_dir = Path(results_dir)
    runs = load_results(results_dir, recipe)
    if not runs:
        raise DataError(f"no finished runs of recipe {recipe!r} under {results_dir / recipe}")
    tasks = sorted({run_task(r) for r in runs})
    if len(tasks) > 1:
        raise DataError(f"{results_dir / recipe} mixes runs of the tasks {', '.join(tasks)}; one folder holds one recipe")
    groups = by_arch(runs, STUDY_ARCHS)
    outdir = results_dir / recipe
    desc = description or (RECIPES[recipe].description if recipe in RECIPES else runs[0]["recipe"].get("description", ""))
    rel = f"{figure_link_root}/{outdir.as_posix()}" if figure_link_root else outdir.as_posix()
    if tasks == ["classes12"]:
        from hotspot_jax.reproduce.classes12 import report_body

        body, aggregate = report_body(recipe, desc, runs, groups, outdir, rel)
    else:
        body, aggregate = _binary_body(recipe, desc, runs, groups, outdir, rel, study=tasks == ["hotspot"])
    write_json(outdir / "aggregate.json", aggregate, compact_lists=tasks == ["classes12"])
    (outdir / "report.md").write_text(f"# Results of recipe `{recipe}`\n\n"
                                      + body.replace(f"]({rel}/", "](./") + "\n")
    if docs is not None:
        update_docs(Path(docs), recipe, body)
    return aggregate


def _binary_body(recipe: str, desc: str, runs: list[dict[str, Any]], groups: dict[str, list[dict[str, Any]]],
                 outdir: Path, rel: str, study: bool) -> tuple[str, dict[str, Any]]:
    """The markdown body and aggregate of a two-class recipe: the hotspot task's (``study``: Table 3 beside the
    study, the realistic test set, Figures 10-12) or the anomaly task's (the same tables of its one test set)."""
    balanced = {a: summarize(rs, "test") for a, rs in groups.items()}
    realistic = {a: summarize(rs, "test_realistic", REALISTIC_METRICS) for a, rs in groups.items()} if study else None
    pairs = paired_comparisons(groups)
    shared = shared_errors(groups)
    figs = write_figures(outdir, groups, balanced, recipe, study=study)
    names = [Path(r["_path"]).name for r in runs]
    if study:
        aggregate = {"recipe": recipe, "runs": names, "method": METHOD, "balanced": balanced, "realistic": realistic,
                     "pairs": pairs, "shared_errors": shared}
    else:
        aggregate = {"recipe": recipe, "task": "anomaly", "runs": names, "method": METHOD, "test": balanced,
                     "pairs": pairs, "shared_errors": shared}
    sizes = sorted({(r["test"].get("n_pos"), r["test"].get("n_neg")) for r in runs})
    parts = [
        f"**Recipe `{recipe}`**: {desc}. Runs: {len(runs)} ({', '.join(f'{a} x{len(r)}' for a, r in groups.items())}).",
        METHOD,
        "Table 3, balanced test set (74 hotspot + 74 No-Anomaly per seed):" if study else
        "Any anomaly vs No-Anomaly, test set (" + "; ".join(f"{p:,} anomalies + {n:,} No-Anomaly" for p, n in sizes)
        + " per seed):",
        tables.table3(groups, balanced, study=study),
        "Pooled counts over seeds:",
        tables.pooled_table(groups, balanced),
    ]
    if study:
        points = operating_points(groups)
        aggregate["operating_points"] = points
        parts += [
            "Realistic prevalence (test hotspots among every No-Anomaly image not used for training or validation):",
            tables.realistic_table(groups, realistic),
        ]
        if points["rows"]:
            parts += ["At the operating point a crew acts on (each run's threshold chosen on its validation split for "
                      "sensitivity >= 0.95; the ensemble's chosen on the mean of its networks' validation scores), "
                      "means over seeds. The last column reads the threshold off the realistic test set itself (the "
                      "fewest false alarms of any threshold reaching the sensitivity there): it measures how well the "
                      "scores rank, apart from where validation put the threshold, and is no operating point:",
                      tables.operating_point_table(points)]
    parts += [
        "Paired comparisons of test accuracy:",
        tables.comparisons_table(pairs) if pairs else "(fewer than two architectures)",
        "Errors shared between architectures (per seed: same split and test images; ensemble = mean hotspot "
        "probability of the networks, a hotspot at 0.5 or more):" if study else
        "Errors shared between architectures (per seed: same split and test images; ensemble = mean anomaly "
        "probability of the networks, an anomaly at 0.5 or more):",
        tables.shared_errors_table(shared) if shared else "(no seed with two or more architectures)",
        "Time to accuracy on the machine of the runs (training epochs only, without compilation and scoring):",
        tables.time_to_accuracy_table(aggregate.setdefault("time_to_accuracy", tables.time_to_accuracy(groups))),
        "Wall time, throughput and machine of every run:",
        tables.timing_table(runs),
        f"![Figure 10]({rel}/{figs['fig10'].name})\n\n![Figure 11]({rel}/{figs['fig11'].name})\n\n"
        f"![Figure 12]({rel}/{figs['fig12'].name})",
    ]
    return "\n\n".join(parts), aggregate


def update_docs(path: Path, recipe: str, body: str) -> bool:
    """Replace the generated block of ``recipe`` in ``path`` (appending one if absent); True if changed."""
    begin, end = f"<!-- BEGIN generated:{recipe} -->", f"<!-- END generated:{recipe} -->"
    block = f"{begin}\n{body}\n{end}"
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, text) if pattern.search(text) else (text.rstrip() + "\n\n" + block + "\n")
    if new != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(path)
        return True
    return False
