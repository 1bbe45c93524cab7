"""The per-layer kernel-gradient timing (hotspot_jax.bench.kernel_grad): runs, agrees, rejects bad shapes."""

from __future__ import annotations

import json

import pytest

from hotspot_jax.bench import kernel_grad


def test_times_both_gradients_of_a_small_layer_and_they_agree(tmp_path, capsys):
    out = tmp_path / "kg.json"
    assert kernel_grad.main(["--layer", "7,2,3,3,1,1", "--layer", "9,3,4,5,2,2", "--batch-size", "2",
                             "--reps", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["shape"] for r in result["layers"]] == [[7, 2, 3, 3, 1, 1], [9, 3, 4, 5, 2, 2]]
    for r in result["layers"]:
        assert r["forward_ms"] > 0 and r["kernel_grad_shifts_ms"] > 0 and r["kernel_grad_xla_ms"] > 0
        assert r["max_rel_diff"] < 1e-4
    assert "| 7,2,3,3,1,1 |" in capsys.readouterr().out


@pytest.mark.parametrize("bad", ["lenet_conv1", "7,2,3", "7,2,3,9,1,0", "7,0,3,3,1,1"])
def test_rejects_unknown_or_impossible_layers(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        kernel_grad.main(["--layer", bad])
    assert exc.value.code == 2
    assert "--layer" in capsys.readouterr().err


def test_known_layers_are_valid_shapes():
    for name in kernel_grad.LAYERS:
        assert kernel_grad.parse_layer(name)[1] == kernel_grad.LAYERS[name]
