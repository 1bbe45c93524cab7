"""The step profiler joins trace events with the compiled HLO: kinds, passes and modules come out right."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from hotspot_jax.bench import profile


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="stem")(x)
        return nn.Dense(2, name="head")(jnp.mean(nn.relu(x), axis=(1, 2)))


def _grad_hlo():
    model = _Tiny()
    x = jnp.ones((2, 8, 8, 1))
    params = model.init(jax.random.PRNGKey(0), x)

    def loss(p):
        return jnp.sum(model.apply(p, x) ** 2)

    return jax.jit(jax.grad(loss)).lower(params).compile().as_text()


def test_parse_hlo_names_kinds_passes_and_modules():
    ops = profile.parse_hlo(_grad_hlo())
    assert ops, "no instruction parsed"
    heavy = [op for op in ops.values() if op.kind in ("convolution", "dot") or op.kind.startswith("fusion[")]
    assert heavy
    stem = [op for op in ops.values() if "stem" in op.op_name and op.op_name.startswith("jit(")]
    assert stem, "the conv layer's module path is missing from every instruction"
    assert {op.phase for op in stem} == {"forward", "backward"}
    assert all(op.module.endswith("stem") for op in stem)
    assert all(not op.module.startswith(("jit", "jvp", "transpose")) for op in stem)


def test_parse_hlo_fusion_takes_its_heaviest_operation():
    text = """HloModule m

%fused_computation (p0: f32[4,4], p1: f32[4,4]) -> f32[4,4] {
  %p0 = f32[4,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  %d = f32[4,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(f)/jvp(M)/layer/dot_general"}
  ROOT %e = f32[4,4]{1,0} exponential(%d)
}

ENTRY %main (a: f32[4,4]) -> (f32[4,4], f32[4,4]) {
  %a = f32[4,4]{1,0} parameter(0)
  %fusion.1 = f32[4,4]{1,0} fusion(%a, %a), kind=kOutput, calls=%fused_computation
  %copy.2 = f32[4,4]{0,1} copy(%a)
  ROOT %t = (f32[4,4]{1,0}, f32[4,4]{0,1}) tuple(%fusion.1, %copy.2)
}
"""
    ops = profile.parse_hlo(text)
    assert ops["fusion.1"].kind == "fusion[dot]"
    assert ops["fusion.1"].op_name == "jit(f)/jvp(M)/layer/dot_general"  # taken from the fused root's metadata
    assert ops["fusion.1"].module == "layer"  # transforms and the primitive are dropped
    assert ops["copy.2"].kind == "copy" and ops["copy.2"].phase == "other"
    assert ops["t"].kind == "tuple"


def test_summarise_sums_per_step_and_skips_containers_and_unknown_events():
    ops = {
        "a": profile.HloOp("a", "convolution", "convolution", "jit(f)/jvp(M)/conv1/conv", "main"),
        "b": profile.HloOp("b", "fusion", "fusion[dot]", "jit(f)/transpose(jvp(M))/conv1/dot", "main"),
        "w": profile.HloOp("w", "while", "while", "jit(f)/while", "main"),
    }
    events = [{"name": "a", "dur": 3000.0}, {"name": "a", "dur": 1000.0}, {"name": "b", "dur": 2000.0},
              {"name": "w", "dur": 9000.0}, {"name": "$python frame", "dur": 5000.0}]
    s = profile.summarise(events, ops, steps=2)
    assert s["op_ms_per_step"] == pytest.approx(3.0)  # (3 + 1 + 2) ms over 2 steps; while and python skipped
    kinds = {(r["kind"], r["pass"]): r["ms_per_step"] for r in s["by_kind"]}
    assert kinds == {("convolution", "forward"): 2.0, ("fusion[dot]", "backward"): 1.0}
    assert s["by_module"][0]["module"] == "conv1" and s["by_module"][0]["share"] == pytest.approx(1.0)


def test_profile_cli_traces_a_real_step_and_writes_json(tmp_path, capsys):
    out = tmp_path / "p.json"
    assert profile.main(["--arch", "squeezenet", "--image-size", "32", "--batch-size", "2", "--steps", "1",
                         "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["arch"] == "squeezenet1_1" and result["op_ms_per_step"] > 0 and result["wall_ms_per_step"] > 0
    assert any(r["pass"] == "backward" for r in result["by_kind"])
    assert any("features" in r["module"] for r in result["by_module"])
    printed = capsys.readouterr().out
    assert "| kind | pass |" in printed and "ms wall time per step" in printed


def test_profile_cli_rejects_unknown_arch(capsys):
    with pytest.raises(SystemExit) as exc:
        profile.main(["--arch", "lenet"])
    assert exc.value.code == 2
    assert "unknown architecture" in capsys.readouterr().err
