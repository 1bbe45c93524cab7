"""Shared torch-vs-Flax parity checks, so that an architecture's parity test is a few lines.

Typical use (see tests/test_resnet.py)::

    torch_model = torch_model_for("resnet18")                # torchvision builder, BN randomised
    assert_eval_parity("resnet18", torch_model, {"layer1": "layer1", "pooled": "avgpool"})
    assert_train_parity("resnet18", torch_model_for("resnet18"))

Tolerances are relative: ``max |diff| <= rtol * max(1, max |torch value|)``. Each helper returns the
measured differences (:class:`Diff`) and prints them, for the README's parity table.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
import weights_convert
from architectures.ops.layers import count_params
from weights_convert import rules

try:  # param-count helpers work without torch; the torch helpers skip the calling test without it
    import torch
    import torchvision

    torch.set_num_threads(2)
except ModuleNotFoundError:  # pragma: no cover - depends on the install
    torch = torchvision = None

jax.config.update("jax_default_matmul_precision", "highest")  # accelerators default to reduced precision


def require_torch() -> None:
    """Skip the calling test (with the reason shown) when torch/torchvision are not installed."""
    if torch is None or torchvision is None:
        pytest.skip("needs torch and torchvision: pip install 'hotspot_jax[torch]'")

RTOL = 1e-4
#: every torch-parity test runs on both implementations of architectures/ops/impl.py: "reference" (the plain
#: lax ops, the default on a GPU) and "cpu" (the CPU rewrites, the default here); pass as ``impl=``
IMPLS = ("reference", "cpu")


@dataclasses.dataclass(frozen=True)
class Diff:
    """One measured comparison: ``max_abs_diff <= tol`` with ``tol = rtol * max(1, scale)``."""

    what: str
    max_abs_diff: float
    scale: float  # max |torch value|
    rtol: float

    @property
    def tol(self) -> float:
        return self.rtol * max(1.0, self.scale)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tol

    def __str__(self) -> str:
        return (f"{self.what}: max|diff|={self.max_abs_diff:.3g} (tol {self.tol:.3g} = {self.rtol:g} x "
                f"max(1, {self.scale:.3g})) {'ok' if self.ok else 'FAIL'}")


def compare(what: str, ours: Any, ref: Any, rtol: float = RTOL) -> Diff:
    """Measure ``ours`` against ``ref`` (same shape required) as a :class:`Diff`."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != torch's {ref.shape}"
    return Diff(what, float(np.max(np.abs(ours - ref))), float(np.max(np.abs(ref))), rtol)


def check(diffs: Sequence[Diff]) -> list[Diff]:
    """Print every measurement, then fail listing those out of tolerance."""
    for d in diffs:
        print(d)
    bad = [str(d) for d in diffs if not d.ok]
    assert not bad, "parity failures:\n" + "\n".join(bad)
    return list(diffs)


def randomise_batchnorm(model: "torch.nn.Module", seed: int = 0) -> "torch.nn.Module":
    """Give every BatchNorm non-trivial statistics and affine params (fresh BN hides mean/var swaps)."""
    require_torch()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                module.running_var.copy_(torch.rand(c, generator=gen) * 1.5 + 0.5)
                if module.affine:
                    module.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    module.bias.copy_(torch.randn(c, generator=gen) * 0.2)
    return model


def disable_dropout(model: "torch.nn.Module") -> "torch.nn.Module":
    """Set every torch dropout module to p=0 (Flax side: ``dropout_rate=0.0``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    return model


def torch_model_for(arch: str, *, seed: int = 0, num_classes: int = 1000, **builder_kwargs: Any) -> "torch.nn.Module":
    """torchvision's model for ``arch`` (registry's builder), random init, BN randomised, eval mode."""
    require_torch()
    spec = architectures.get(arch)
    torch.manual_seed(seed)
    model = torchvision.models.get_model(
        spec.torchvision_builder, weights=None, num_classes=num_classes, **builder_kwargs
    )
    return randomise_batchnorm(model, seed).eval()


def random_input(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Standard normal NCHW float32 input."""
    return np.random.default_rng(seed).standard_normal((batch, 3, height, width)).astype(np.float32)


def to_nhwc(x: Any) -> np.ndarray:
    """NCHW (torch) -> NHWC (Flax); other ranks unchanged."""
    x = np.asarray(x)
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


def _torch_forward(model: "torch.nn.Module", x: np.ndarray, modules: Sequence[str]) -> tuple[np.ndarray, dict]:
    """Logits and the outputs of the named submodules (forward hooks)."""
    captured, handles = {}, []
    named = dict(model.named_modules())
    for name in modules:
        if name not in named:
            raise KeyError(f"torch model has no submodule {name!r}")

        def hook(_module, _inputs, output, name=name):
            captured[name] = (output[0] if isinstance(output, tuple) else output).detach().numpy().copy()

        handles.append(named[name].register_forward_hook(hook))
    try:
        out = model(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    out = out[0] if isinstance(out, tuple) else out  # GoogLeNet's train-mode namedtuple
    return out.detach().numpy(), captured


def _flax_stage(intermediates: Mapping[str, Any], name: str) -> np.ndarray:
    """A sown intermediate by its '/'-joined path (sow stores a tuple; the last value is taken)."""
    node: Any = intermediates
    for part in name.split("/"):
        if part not in node:
            raise KeyError(f"Flax model sowed no intermediate {name!r}; it has {sorted(node)}")
        node = node[part]
    return np.asarray(node[-1])


def _compare_stages(stage_map: Mapping[str, str], inter: Mapping, captured: Mapping, tag: str, rtol: float):
    diffs = []
    for flax_name, torch_name in stage_map.items():
        ours = _flax_stage(inter, flax_name)
        ref = to_nhwc(captured[torch_name])
        if ref.shape != ours.shape and ref.size == ours.size:
            ref = ref.reshape(ours.shape)  # e.g. torch's (N, C, 1, 1) pooled map vs Flax's (N, C)
        diffs.append(compare(f"{tag} stage {flax_name} (torch {torch_name})", ours, ref, rtol))
    return diffs


def assert_eval_parity(
    arch: str,
    torch_model: "torch.nn.Module",
    stage_map: Mapping[str, str],
    sizes: Sequence[tuple[int, int]] | None = None,
    batch: int = 2,
    seed: int = 0,
    rtol: float = RTOL,
    **arch_options: Any,
) -> list[Diff]:
    """Eval-mode logits and per-stage features of the converted Flax model equal torch's.

    ``stage_map``: {Flax intermediate name: torch submodule name}. ``sizes``: (height, width) pairs,
    default the architecture's square size. Returns the measured :class:`Diff` list.
    """
    spec = architectures.get(arch)
    sizes = sizes or [(spec.input_size, spec.input_size)]
    torch_model.eval()
    variables = weights_convert.convert(arch, torch_model, **arch_options)
    model = architectures.create(arch, num_classes=_num_classes(variables, arch), **arch_options)
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False, mutable=["intermediates"]))
    diffs = []
    for i, (h, w) in enumerate(sizes):
        x = random_input(batch, h, w, seed + i)
        with torch.no_grad():
            ref, captured = _torch_forward(torch_model, x, list(stage_map.values()))
        logits, state = apply(variables, jnp.asarray(to_nhwc(x)))
        tag = f"{arch} eval {h}x{w}"
        diffs.append(compare(f"{tag} logits", logits, ref, rtol))
        diffs += _compare_stages(stage_map, state["intermediates"], captured, tag, rtol)
    return check(diffs)


def _num_classes(variables: Mapping, arch: str) -> int:
    head = variables["params"][architectures.get(arch).classifier[-1]]
    return int(head["bias"].shape[-1]) if "bias" in head else int(head["kernel"].shape[-1])


def assert_train_parity(
    arch: str,
    torch_model: "torch.nn.Module",
    size: tuple[int, int] = (64, 64),
    batch: int = 4,
    seed: int = 0,
    rtol: float = RTOL,
    **arch_options: Any,
) -> list[Diff]:
    """Train mode (BN on batch statistics, dropout off): logits and updated running stats equal torch's.

    ``layers.TorchBatchNorm`` folds the unbiased batch variance into ``var`` as torch does, so the new
    running statistics are compared directly, with no n/(n-1) correction. Pass ``dropout_rate=0.0`` in ``arch_options`` for architectures with dropout.
    """
    disable_dropout(torch_model)
    torch_model.eval()
    variables = weights_convert.convert(arch, torch_model, **arch_options)
    model = architectures.create(arch, num_classes=_num_classes(variables, arch), **arch_options)
    x = random_input(batch, *size, seed=seed + 100)
    torch_model.train()
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
    torch_model.eval()
    apply = jax.jit(lambda v, x, r: model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": r}))
    logits, new_state = apply(variables, jnp.asarray(to_nhwc(x)), jax.random.PRNGKey(seed))
    tag = f"{arch} train {size[0]}x{size[1]}"
    diffs = [compare(f"{tag} logits", logits, ref, rtol)]

    new = new_state["batch_stats"]
    means_ours, means_ref, vars_ours, vars_ref = [], [], [], []
    override = rules.override_for(architectures.get(arch).name)
    for key, tensor in torch_model.state_dict().items():
        if not key.endswith(("running_mean", "running_var")):
            continue
        path = rules.flax_path(key, tensor.ndim, override)[1:]
        ours_new = _lookup(new, path)
        ref_new = tensor.numpy()
        if key.endswith("running_mean"):
            means_ours.append(ours_new)
            means_ref.append(ref_new)
        else:
            vars_ours.append(ours_new)
            vars_ref.append(ref_new)
    assert means_ref, f"{arch} has no BatchNorm running statistics to compare"
    diffs.append(compare(f"{tag} running_mean ({len(means_ref)} BN)", np.concatenate(means_ours),
                         np.concatenate(means_ref), rtol))
    diffs.append(compare(f"{tag} running_var ({len(vars_ref)} BN)", np.concatenate(vars_ours),
                         np.concatenate(vars_ref), rtol))
    return check(diffs)


def _lookup(tree: Mapping, path: Sequence[str]) -> np.ndarray:
    for part in path:
        tree = tree[part]
    return np.asarray(tree, np.float64)


def flax_param_count(arch: str, num_classes: int = 1000, **arch_options: Any) -> int:
    """Number of Flax params (shapes only, nothing computed) at the architecture's input size."""
    spec = architectures.get(arch)
    shapes = weights_convert.variable_shapes(arch, num_classes, spec.input_size, **arch_options)
    return count_params([s for p, s in shapes.items() if p[0] == "params"])


def assert_param_count(arch: str, expected: int | None = None, **arch_options: Any) -> int:
    """Flax param count equals ``expected`` (default: the registry's torchvision count) and torch's."""
    spec = architectures.get(arch)
    expected = spec.num_params if expected is None else expected
    ours = flax_param_count(arch, **arch_options)
    print(f"{arch}: {ours:,} params (expected {expected:,})")
    assert ours == expected, f"{arch}: {ours:,} Flax params, expected {expected:,}"
    return ours
