"""An ensemble of networks from several results folders (hotspot_jax.reproduce.mixed_ensemble): the same per-seed
ensemble as a recipe's own, over the seeds every member has, and one clear error for members that cannot mix."""

from __future__ import annotations

import json

import pytest

from hotspot_jax.errors import ConfigError, DataError
from hotspot_jax.reproduce import cli
from hotspot_jax.reproduce.ensemble import ensemble_of_seed
from hotspot_jax.reproduce.mixed_ensemble import mixed_ensemble, parse_member
from test_ensemble import scored_run
from test_reproduce import write_runs


def _in(folder, run):
    run = json.loads(json.dumps(run))
    run["recipe"]["name"] = folder
    return run


@pytest.fixture
def results(tmp_path):
    """Folder A: alexnet and squeezenet, seeds 0-2; folder B: squeezenet seeds 0-1 (other scores than A's)."""
    runs = [_in("A", scored_run(a, s, shift)) for a, shift in (("alexnet", 0.0), ("squeezenet1_1", -0.1))
            for s in (0, 1, 2)]
    runs += [_in("B", scored_run("squeezenet1_1", s, 0.05)) for s in (0, 1)]
    write_runs(tmp_path, runs)
    return tmp_path, runs


def test_parse_member_names_the_folder_and_canonical_networks():
    assert parse_member("best-v2+pretrain_epochs=80:shufflenet, squeezenet") == (
        "best-v2+pretrain_epochs=80", ["shufflenet_v2_x1_0", "squeezenet1_1"])
    for bad in ("best-v2", ":alexnet", "best-v2:", "best-v2: , "):
        with pytest.raises(ConfigError, match="FOLDER:ARCH"):
            parse_member(bad)
    with pytest.raises(ConfigError, match="unknown architecture"):
        parse_member("best-v2:lenet")


def test_mixed_ensemble_is_the_seed_ensemble_of_the_named_runs_over_shared_seeds(results):
    root, runs = results
    out = mixed_ensemble(root, ["A:alexnet", "B:squeezenet"])
    assert out["seeds"] == [0, 1]  # B has no seed 2
    for e in out["operating_points"]["ensembles"]:
        members = [r for r in runs if (r["recipe"]["name"], r["arch"]) in {("A", "alexnet"), ("B", "squeezenet1_1")}
                   and r["seed"] == e["seed"]]
        expect = ensemble_of_seed(members, 0.95)
        assert e["operating_point"] == expect["operating_point"]
        assert e["test_realistic_at_operating_point"] == expect["test_realistic_at_operating_point"]
    # B's squeezenet, not A's: swapping the folder changes the ensemble
    other = mixed_ensemble(root, ["A:alexnet", "A:squeezenet"])
    assert other["seeds"] == [0, 1, 2]
    assert [e["operating_point"] for e in other["operating_points"]["ensembles"][:2]] != [
        e["operating_point"] for e in out["operating_points"]["ensembles"]]
    names = [r["name"] for r in out["operating_points"]["rows"]]
    assert names == ["AlexNet · A", "SqueezeNet 1.1 · B", "ensemble"]


def test_members_that_cannot_mix_get_one_clear_error(results):
    root, runs = results
    with pytest.raises(ConfigError, match="twice"):
        mixed_ensemble(root, ["A:alexnet,alexnet"])
    with pytest.raises(ConfigError, match="two or more"):
        mixed_ensemble(root, ["A:alexnet"])
    with pytest.raises(DataError, match="no run of alexnet"):
        mixed_ensemble(root, ["B:alexnet", "A:alexnet"])
    with pytest.raises(DataError, match="no run summaries"):
        mixed_ensemble(root, ["C:alexnet", "A:alexnet"])
    # a member scored on another split (other image ids) is refused, not averaged by position
    moved = _in("D", scored_run("googlenet", 0, 0.0))
    moved["test_predictions"]["ids"] = [f"x{i}" for i in moved["test_predictions"]["ids"]]
    write_runs(root, [moved])
    with pytest.raises(DataError, match="same test images"):
        mixed_ensemble(root, ["A:alexnet", "D:googlenet"])
    # and one without validation scores (a summary from before they were kept)
    old = _in("E", scored_run("googlenet", 0, 0.0))
    del old["val_predictions"]
    write_runs(root, [old])
    with pytest.raises(DataError, match="same val images"):
        mixed_ensemble(root, ["A:alexnet", "E:googlenet"])


def test_cli_writes_the_report_and_its_command(results, capsys):
    root, _ = results
    assert cli.main(["--results-dir", str(root), "--ensemble", "A:alexnet", "B:squeezenet", "--ensemble-name", "t"]) == 0
    printed = capsys.readouterr().out
    assert "ensemble (mean probability of 2 networks)" in printed
    saved = json.loads((root / "ensembles" / "t.json").read_text())
    assert saved["seeds"] == [0, 1] and "--ensemble A:alexnet B:squeezenet" in saved["command"]
    assert "```bash" in (root / "ensembles" / "t.md").read_text()
    with pytest.raises(ConfigError, match="plain file name"):
        cli.main(["--results-dir", str(root), "--ensemble", "A:alexnet", "B:squeezenet", "--ensemble-name", "../x"])
