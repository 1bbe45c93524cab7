"""An ensemble of networks taken from several results folders, per seed: e.g. each network at the recipe it has
been run with best so far (``best-v2+pretrain_epochs=80:shufflenet,squeezenet`` with ``best-v2:googlenet,...``).

It reads only the committed run summaries and trains nothing. Its members must have scored the same validation,
test and realistic-test images on each seed (the same split, e.g. every recipe on the fixed No-Anomaly pools);
its threshold is chosen on the mean of the members' validation scores, as a recipe's own ensemble's is
(:func:`hotspot_jax.reproduce.ensemble.ensemble_of_seed`), so no test image chooses anything. Which members join
is the caller's choice and must be made before the test sets are read. Tested in tests/test_mixed_ensemble.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.reproduce.ensemble import SCORED_SPLITS, _aligned, operating_points
from hotspot_jax.reproduce.runner import load_results, write_json
from hotspot_jax.reproduce.study import display_name
from hotspot_jax.reproduce.tables import _table, fmt, operating_point_table


def parse_member(spec: str) -> tuple[str, list[str]]:
    """``"FOLDER:ARCH[,ARCH...]"`` -> (folder, canonical architecture names); ConfigError in one line otherwise."""
    import architectures

    folder, sep, names = str(spec).rpartition(":")
    archs = [a.strip() for a in names.split(",") if a.strip()]
    if not sep or not folder.strip() or not archs:
        raise ConfigError(f"--ensemble expects FOLDER:ARCH[,ARCH...] (e.g. best-v2:googlenet,alexnet), got {spec!r}")
    return folder.strip(), [architectures.get(a).name for a in archs]  # ConfigError for an unknown name


def member_runs(results_dir: str | Path, specs: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """``{"<network> · <folder>": [its run summaries]}`` in the order given; DataError for a folder without runs
    or a network without runs in its folder, ConfigError for a member named twice."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for spec in specs:
        folder, archs = parse_member(spec)
        runs = load_results(results_dir, folder)
        if not runs:
            raise DataError(f"--ensemble {spec}: no run summaries under {Path(results_dir) / folder}")
        for arch in archs:
            label = f"{display_name(arch)} · {folder}"
            if label in groups:
                raise ConfigError(f"--ensemble names {display_name(arch)} of {folder} twice")
            mine = [r for r in runs if r["arch"] == arch]
            if not mine:
                raise DataError(f"--ensemble {spec}: {folder} has no run of {arch} (it has "
                                f"{', '.join(sorted({r['arch'] for r in runs}))})")
            groups[label] = mine
    if len(groups) < 2:
        raise ConfigError("--ensemble needs two or more networks")
    return groups


def mixed_ensemble(results_dir: str | Path, specs: Sequence[str], target: float = 0.95) -> dict[str, Any]:
    """The operating points of the members and of their per-seed ensemble over the seeds every member has
    (:func:`~hotspot_jax.reproduce.ensemble.operating_points`); DataError when no seed is shared, or when the
    members of a seed scored different images or lack the validation and realistic-test scores."""
    groups = member_runs(results_dir, specs)
    seeds = sorted(set.intersection(*({r["seed"] for r in runs} for runs in groups.values())))
    if not seeds:
        raise DataError("the --ensemble members share no seed: " + "; ".join(
            f"{k}: seeds {sorted(r['seed'] for r in v)}" for k, v in groups.items()))
    groups = {k: [r for r in v if r["seed"] in seeds] for k, v in groups.items()}
    for seed in seeds:
        runs = [r for v in groups.values() for r in v if r["seed"] == seed]
        for split in SCORED_SPLITS:
            if _aligned(runs, split) is None:
                raise DataError(f"seed {seed}: the --ensemble members did not all score the same {split} images "
                                "(a summary without those scores, or another split: mix folders of one pool layout)")
    points = operating_points(groups, target)
    return {"members": list(specs), "seeds": seeds, "target_sensitivity": target, "operating_points": points}


def mixed_ensemble_report(result: dict[str, Any], command: str = "") -> str:
    """Markdown: the command, the members' and the ensemble's operating points (means over the seeds), and the
    ensemble per seed."""
    points = result["operating_points"]
    per_seed = [[str(e["seed"]), fmt(e["test"]["accuracy"]), fmt(e["operating_point"]["threshold"], 3),
                 fmt(e["test_realistic_at_operating_point"]["sensitivity"], 3),
                 fmt(e["test_realistic_at_operating_point"]["false_alarms_per_1000"], 1),
                 fmt(e["realistic_false_alarms_at_sensitivity"], 1)] for e in points["ensembles"]]
    target = result["target_sensitivity"]
    lines = [f"Ensemble (mean hotspot probability) of {', '.join(f'`{m}`' for m in result['members'])}, "
             f"seeds {', '.join(map(str, result['seeds']))}; threshold chosen on the mean validation scores for "
             f"sensitivity >= {target:g}.", ""]
    if command:
        lines += ["```bash", command, "```", ""]
    lines += [operating_point_table(points), "", _table(
        ["Seed", "Balanced test accuracy (0.5)", "Threshold", "Realistic sensitivity (threshold)",
         "False alarms / 1000 (threshold)", f"False alarms / 1000 at realistic sensitivity {target:g} (ranking)"],
        per_seed)]
    return "\n".join(lines) + "\n"


def write_mixed_ensemble(results_dir: str | Path, name: str, result: dict[str, Any], command: str = "") -> Path:
    """``<results_dir>/ensembles/<name>.json`` and ``.md``; returns the markdown path."""
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"--ensemble-name must be a plain file name, got {name!r}")
    out = Path(results_dir) / "ensembles"
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", json.loads(json.dumps({**result, "command": command})))
    md = out / f"{name}.md"
    md.write_text(f"# Ensemble `{name}`\n\n" + mixed_ensemble_report(result, command))
    return md
