"""Turn a recipe's committed run summaries into its report: ``results/<recipe>/report.md`` (tables),
``aggregate.json`` (the numbers behind them) and the three figures; optionally refresh the generated
block of ``docs/results.md`` between ``<!-- BEGIN generated:<recipe> -->`` and ``<!-- END generated:<recipe> -->``."""

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
from hotspot_jax.reproduce.figures import write_figures
from hotspot_jax.reproduce.recipes import RECIPES
from hotspot_jax.reproduce.runner import load_results, write_json
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
    groups = by_arch(runs, STUDY_ARCHS)
    balanced = {a: summarize(rs, "test") for a, rs in groups.items()}
    realistic = {a: summarize(rs, "test_realistic", REALISTIC_METRICS) for a, rs in groups.items()}
    pairs = paired_comparisons(groups)
    shared = shared_errors(groups)
    outdir = results_dir / recipe
    figs = write_figures(outdir, groups, balanced, recipe)
    aggregate = {"recipe": recipe, "runs": [Path(r["_path"]).name for r in runs], "method": METHOD,
                 "balanced": balanced, "realistic": realistic, "pairs": pairs, "shared_errors": shared}
    write_json(outdir / "aggregate.json", aggregate)
    desc = description or (RECIPES[recipe].description if recipe in RECIPES else runs[0]["recipe"].get("description", ""))
    rel = f"{figure_link_root}/{outdir.as_posix()}" if figure_link_root else outdir.as_posix()
    body = "\n\n".join([
        f"**Recipe `{recipe}`**: {desc}. Runs: {len(runs)} ({', '.join(f'{a} x{len(r)}' for a, r in groups.items())}).",
        METHOD,
        "Table 3, balanced test set (74 hotspot + 74 No-Anomaly per seed):",
        tables.table3(groups, balanced),
        "Pooled counts over seeds:",
        tables.pooled_table(groups, balanced),
        "Realistic prevalence (test hotspots among every No-Anomaly image not used for training or validation):",
        tables.realistic_table(groups, realistic),
        "Paired comparisons of test accuracy:",
        tables.comparisons_table(pairs) if pairs else "(fewer than two architectures)",
        "Errors shared between architectures (per seed: same split and test images; ensemble = mean hotspot "
        "probability of the networks, a hotspot at 0.5 or more):",
        tables.shared_errors_table(shared) if shared else "(no seed with two or more architectures)",
        "Wall time, throughput and machine of every run:",
        tables.timing_table(runs),
        f"![Figure 10]({rel}/{figs['fig10'].name})\n\n![Figure 11]({rel}/{figs['fig11'].name})\n\n"
        f"![Figure 12]({rel}/{figs['fig12'].name})",
    ])
    (outdir / "report.md").write_text(f"# Results of recipe `{recipe}`\n\n"
                                      + body.replace(f"]({rel}/", "](./") + "\n")
    if docs is not None:
        update_docs(Path(docs), recipe, body)
    return aggregate


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
