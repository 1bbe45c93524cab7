"""hlo_diff calls two compilations of one program identical and a changed program different, with its op counts."""

import jax
import jax.numpy as jnp
import pytest

from hotspot_jax.bench import hlo_diff


def _compiled(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


def _net(x, w):
    return jnp.tanh(x @ w).sum(axis=0)


def _net_renamed(a, b):  # the same program under other function, argument and source-line names
    y = a @ b
    return jnp.tanh(y).sum(axis=0)


_ARGS = (jnp.ones((64, 32)), jnp.ones((32, 48)))


def test_same_program_under_other_names_is_identical():
    before, after = _compiled(_net, *_ARGS), _compiled(_net_renamed, *_ARGS)
    assert before != after  # module, instruction names and metadata differ in the raw text
    r = hlo_diff.compare(before, after)
    assert r["identical"], r["changed_lines"]
    assert r["changed_lines"] == [] and r["op_count_changes"] == {"entry": {}, "all": {}}
    assert r["entry_ops"]["parameter"] == 2


def test_changed_program_is_different_with_its_ops():
    before = _compiled(_net, *_ARGS)
    after = _compiled(lambda x, w: _net(x, w) * 2.0, *_ARGS)
    r = hlo_diff.compare(before, after)
    assert not r["identical"] and r["changed_lines"]
    n_before, n_after = r["op_count_changes"]["all"]["multiply"]
    assert n_after == n_before + 1


def test_opcode_skips_tuple_types():
    assert hlo_diff._opcode("%t = (f32[2]{0}, (s32[], u8[3]{0})) tuple(%a, %b)") == "tuple"
    assert hlo_diff._opcode("ROOT %r = f32[2,3]{1,0} add(%a, %b), metadata={op_name=\"x\"}") == "add"
    assert hlo_diff._opcode("%f = f32[4]{0} fusion(%p), kind=kLoop, calls=%fused_computation.3") == "fusion"


def test_normalise_drops_source_tables_and_names():
    text = _compiled(_net, *_ARGS)
    lines = hlo_diff.normalise(text)
    assert not any("FileNames" in line or "metadata=" in line or ".py" in line for line in lines)
    assert lines[0].startswith("HloModule,")


def test_not_a_checkout_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        hlo_diff.main(["--before", str(tmp_path), "--arch", "alexnet", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m hotspot_jax.bench.hlo_diff: error: --before") and "not a checkout" in err[-1]


def test_data_flow_counts_not_only_the_ops():
    x, y = jnp.ones((8, 8)), jnp.full((8, 8), 2.0)
    r = hlo_diff.compare(_compiled(lambda a, b: a - b, x, y), _compiled(lambda a, b: b - a, x, y))
    assert not r["identical"]  # the same opcodes, operands the other way round
    assert r["op_count_changes"] == {"entry": {}, "all": {}}
