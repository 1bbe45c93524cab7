"""Every registered architecture under every implementation (architectures.ops.impl) is the same network.

For each architecture, the reference implementation (plain ``lax`` ops, what runs on a GPU) and the CPU one,
with its size thresholds lowered so that small inputs reach every rewrite (Winograd, patches, first-layer
``lax.conv``, the dense max-pool gradient, stored activations), give the same parameter tree and init
values, and equal logits, BatchNorm statistics and gradients of a training step with dropout on. The networks compute in
float64 here (parameters float32): in float32, train-mode BatchNorm over few values (a batch of 3 on 1x2 maps
in ResNet-50's layer4) amplified the rounding of sums taken in another order to 5% of a gradient. Logits within
1e-3 of their scale, each gradient within 1e-3 of its norm plus 1e-4 of the network's largest gradient per entry
(BatchNorm biases followed by another BatchNorm have a zero gradient in exact arithmetic, rounding noise here). The CPU path's forward pass shows its marks (custom gradients, barriers) and the reference's none.
The study's six networks run by default; the other registered variants, whose blocks one of those already
runs (ResNet-18 to 152, ShuffleNetV2 x0.5 to x2.0, SqueezeNet 1.0), are marked slow. The architecture files themselves: no CPU vocabulary, SqueezeNet in at most 120 lines.
Neither they nor the op modules (architectures/ops) quote timings or rows of the optimisation log.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.ops.impl import Impl

#: the CPU path with its size rules lowered to these small inputs' maps
CPU_LOWERED = Impl("cpu", kernel_grad="xla", winograd_min_channels=8, winograd_min_output_pixels=17)
IMPLS = {"reference": Impl("reference"), "cpu": CPU_LOWERED}
CPU_MARKS = ("custom_vjp_call", "optimization_barrier")
#: input size per architecture: large enough for maps of more than 16 pixels in the first stages
SIZES = {"alexnet": 63, "squeezenet1_0": 40, "squeezenet1_1": 40}
#: run by default: the study's six and the networks added after them; every other one is marked slow
DEFAULT = {"alexnet", "googlenet", "mobilenet_v2", "resnet50", "shufflenet_v2_x1_0", "squeezenet1_1", "efficientnet_b0"}
OPTIONS = {"googlenet": {"aux_logits": True}}  # reach the auxiliary heads too
BATCH = 3


def _cases():
    for name in architectures.names():
        marks = [] if name in DEFAULT else [pytest.mark.slow]
        yield pytest.param(name, marks=marks, id=name)


@functools.lru_cache(maxsize=None)
def _run(arch: str, impl_name: str):
    with jax.enable_x64(True):
        return _run_x64(arch, impl_name)


def _run_x64(arch: str, impl_name: str):
    """(init variables, training forward's jaxpr, train logits, new batch stats, train gradients)."""
    size = SIZES.get(arch, 32)
    model = architectures.create(arch, num_classes=3, impl=IMPLS[impl_name], dtype=jnp.float64, **OPTIONS.get(arch, {}))
    x = jax.random.normal(jax.random.PRNGKey(1), (BATCH, size, size + 3, 3), jnp.float64)
    variables = jax.jit(lambda k: model.init({"params": k, "dropout": k}, x[:1], train=False))(jax.random.PRNGKey(0))
    mutable = ["batch_stats", "aux_logits"]
    weights = jnp.array([1.0, -0.5, 0.25])

    def train_loss(params):
        logits, state = model.apply({**variables, "params": params}, x, train=True, mutable=mutable,
                                    rngs={"dropout": jax.random.PRNGKey(2)})
        aux = sum(jnp.sum(a * weights) for a in jax.tree.leaves(state.get("aux_logits", {})))
        return jnp.sum(jnp.sin(logits) * weights) + 0.3 * aux, (logits, state.get("batch_stats", {}))

    jaxpr = str(jax.make_jaxpr(lambda p: train_loss(p)[0])(variables["params"]))
    (_, (logits, stats)), grads = jax.jit(jax.value_and_grad(train_loss, has_aux=True))(variables["params"])
    return variables, jaxpr, logits, stats, grads


def _assert_close_per_leaf(name, ours, ref, rel, atol):
    """Each leaf within ``rel`` of the reference leaf's norm, plus ``atol`` per entry (module doc)."""
    ref_leaves = jax.tree_util.tree_leaves_with_path(ref)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref), name
    for (path, b), a in zip(ref_leaves, jax.tree.leaves(ours)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.linalg.norm(a - b) <= rel * np.linalg.norm(b) + atol * np.sqrt(b.size), \
            f"{name} {jax.tree_util.keystr(path)}"


@pytest.mark.parametrize("arch", _cases())
def test_every_implementation_computes_the_same_network(arch):
    ref_vars, ref_jaxpr, ref_logits, ref_stats, ref_grads = _run(arch, "reference")
    cpu_vars, cpu_jaxpr, logits, stats, grads = _run(arch, "cpu")
    assert jax.tree_util.tree_structure(cpu_vars) == jax.tree_util.tree_structure(ref_vars)
    for a, b in zip(jax.tree.leaves(cpu_vars), jax.tree.leaves(ref_vars)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # same names, shapes and init draws
    assert any(mark in cpu_jaxpr for mark in CPU_MARKS), "the CPU path shows none of its marks"
    assert not any(mark in ref_jaxpr for mark in CPU_MARKS), "the reference path holds a CPU rewrite"
    scale = max(1.0, float(jnp.max(jnp.abs(ref_logits))))
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), rtol=1e-3, atol=1e-3 * scale)
    assert float(jnp.max(jnp.abs(ref_logits))) > 0
    # running means of maps whose batch mean is zero up to rounding (after a BatchNorm) are ~1e-9: absolute
    _assert_close_per_leaf(f"{arch} batch stats", stats, ref_stats, 1e-4, atol=1e-7)
    largest = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
    _assert_close_per_leaf(f"{arch} gradients", grads, ref_grads, 1e-3, atol=1e-4 * largest)
    assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(ref_grads)), "a parameter got no gradient"


def test_implementations_are_explicit_hashable_and_cached_apart():
    assert architectures.create("squeezenet1_1", impl="cpu") == architectures.create("squeezenet1_1", impl=Impl("cpu"))
    assert hash(architectures.create("squeezenet1_1", impl="cpu")) != hash(architectures.create("squeezenet1_1",
                                                                                                impl="reference"))
    from architectures.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown implementation"):
        architectures.create("squeezenet1_1", impl="gpu-fast")


ARCH_DIR = Path(architectures.__file__).parent
#: the CPU path's vocabulary (channel parts, fusion barriers, kernel-only convolutions, pooled flags), rows of the
#: optimisation log and timings
FORBIDDEN = re.compile(r"\b(parts?|barriers?|kernel_only|pooled_already|pooled=|row \d+|rows \d+|\d+ ?ms|img/s|"
                       r"fast ?path|\d+(\.\d+)?x (faster|slower))\b", re.IGNORECASE)


#: timings and rows of the optimisation log, which belong in docs/performance.md: "row 17", "rows 35-37", "285 ms",
#: "img/s", "1.21x faster", "4-20x slower", "0.55x". Shapes ("3x3", "F(2x2, 3x3)", "x4") are not timings, nor are
#: counts of operations ("2.25x fewer multiplications", SqueezeNet 1.1's "2.4x less computation" or "cheaper")
TIMINGS = re.compile(r"\b(rows? \d+|\d+ ?ms\b|img/s|\d+(\.\d+)?x (faster|slower)|"
                     r"\d+\.\d+x\b(?!\s+(fewer|less|cheaper)))", re.IGNORECASE)


@pytest.mark.parametrize("path", sorted(p.name for p in ARCH_DIR.glob("*.py") if p.name not in (
    "__init__.py", "registry.py", "errors.py")))
def test_architecture_files_speak_the_papers_vocabulary(path):
    text = (ARCH_DIR / path).read_text()
    hits = [m.group(0) for m in FORBIDDEN.finditer(text)] + [m.group(0) for m in TIMINGS.finditer(text)]
    assert not hits, f"{path} mentions {hits}"


@pytest.mark.parametrize("path", sorted(p.name for p in (ARCH_DIR / "ops").glob("*.py")))
def test_op_modules_quote_no_timings_or_log_rows(path):
    """The ops say what they compute and why; the measurements behind them are in docs/performance.md."""
    text = (ARCH_DIR / "ops" / path).read_text()
    hits = [m.group(0) for m in TIMINGS.finditer(text)]
    assert not hits, f"ops/{path} mentions {hits}"


def test_the_timings_pattern_flags_timings_and_spares_shapes():
    flagged = ["row 17", "rows 35-37", "285 ms", "41.3 img/s", "1.21x faster", "4-20x slower", "made it 0.55x)",
               "trained 0.83x with it", "measured 5x faster"]
    spared = ["3x3", "1x1 convolutions", "2x2 map", "F(2x2, 3x3)", "x4", "2.25x fewer multiplications",
              "2.4x cheaper", "2.4x\nless computation", "36 kernel rows per channel", "in a row", "row-major order",
              "rows and columns", "576x the work"]
    assert [t for t in flagged if not TIMINGS.search(t)] == []
    assert [t for t in spared if TIMINGS.search(t)] == []


def test_squeezenet_reads_like_torchvisions():
    assert len((ARCH_DIR / "squeezenet.py").read_text().splitlines()) <= 120
