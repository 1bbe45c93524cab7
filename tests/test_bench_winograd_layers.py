"""The per-layer Winograd timing (hotspot_jax.bench.winograd_layers): runs, agrees with XLA, rejects bad shapes."""

import json

import pytest

from hotspot_jax.bench import winograd_layers


def test_times_a_small_layer_and_writes_json(tmp_path):
    out = tmp_path / "w.json"
    assert winograd_layers.main(["--layer", "7,4,6", "--batch-size", "2", "--reps", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["layers"]
    assert row["shape"] == [7, 4, 6]
    for variant in winograd_layers.VARIANTS:
        assert row[f"{variant}_forward_ms"] > 0 and row[f"{variant}_with_gradients_ms"] > 0
    assert row["winograd_max_rel_diff"] < 1e-4 and row["winograd_xla_input_grad_max_rel_diff"] < 1e-4


@pytest.mark.parametrize("bad", ["7,4", "7,0,6", "a,b,c", "nope"])
def test_bad_layers_are_usage_errors(bad):
    with pytest.raises(SystemExit) as exc:
        winograd_layers.main(["--layer", bad])
    assert exc.value.code == 2


def test_named_layers_parse():
    for name in winograd_layers.LAYERS:
        assert winograd_layers.parse_layer(name)[1] == winograd_layers.LAYERS[name]
