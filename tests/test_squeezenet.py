"""SqueezeNet 1.0/1.1: param counts, registry, init, min input size, torchvision parity (eval and train)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
from architectures.squeezenet import TORCH_STAGES
from hotspot_jax.errors import ConfigError
from parity_utils import (
    IMPLS,
    assert_eval_parity,
    assert_param_count,
    check,
    compare,
    disable_dropout,
    random_input,
    require_torch,
    to_nhwc,
    torch_model_for,
)
import weights_convert

# torchvision's published counts (SqueezeNet1_*_Weights.meta["num_params"]), 1000 classes
PUBLISHED = {"squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496}


@pytest.mark.parametrize("arch", sorted(PUBLISHED))
def test_param_count_matches_published(arch):
    assert architectures.get(arch).num_params == PUBLISHED[arch]
    assert assert_param_count(arch, PUBLISHED[arch]) == PUBLISHED[arch]


def test_registry_entries():
    spec = architectures.get("squeezenet")  # the study's MATLAB squeezenet is v1.1 at 227x227
    assert spec.name == "squeezenet1_1" and architectures.aliases()["squeezenet"] == "squeezenet1_1"
    assert (spec.input_size, spec.min_input_size, spec.classifier, spec.first_conv) == (
        227, 17, ("classifier_1",), "features_0"
    )
    assert (architectures.get("squeezenet1_0").input_size, architectures.get("squeezenet1_0").min_input_size) == (
        227, 21
    )
    w = architectures.weight_spec("squeezenet1_1.tv_in1k")
    assert (w.file_name, w.acc1, w.resize, w.crop, w.torchvision_enum) == (
        "squeezenet1_1-b8a52dc0.pth", 58.178, 256, 224, "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    )
    w = architectures.weight_spec("squeezenet1_0.tv_in1k")
    assert (w.file_name, w.acc1, w.num_params) == ("squeezenet1_0-b66bff10.pth", 58.092, 1_248_424)


@pytest.mark.needs_torch
def test_registry_matches_torchvision_meta():
    require_torch()
    import torchvision

    for arch, enum in (("squeezenet1_0", "SqueezeNet1_0_Weights"), ("squeezenet1_1", "SqueezeNet1_1_Weights")):
        meta = getattr(torchvision.models, enum).IMAGENET1K_V1
        spec, w = architectures.get(arch), architectures.weight_spec(f"{arch}.tv_in1k")
        assert meta.meta["min_size"] == (spec.min_input_size, spec.min_input_size)
        assert meta.meta["num_params"] == spec.num_params == w.num_params
        assert meta.meta["_metrics"]["ImageNet-1K"]["acc@1"] == w.acc1
        assert meta.url.rsplit("/", 1)[-1] == w.file_name
        torch_count = sum(p.numel() for p in getattr(torchvision.models, arch)().parameters())
        assert torch_count == PUBLISHED[arch]


def numpy_variables(model, x, seed=0):
    """Variables of ``model`` drawn with numpy (He-scaled kernels, small biases), avoiding a slow init compile."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        scale = np.sqrt(2 / np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 0.01
        return jnp.asarray(rng.standard_normal(leaf.shape) * scale, jnp.float32)

    return jax.tree.map(draw, shapes)


def test_torchvision_init():
    model = architectures.create("squeezenet1_1", num_classes=12)

    @jax.jit
    def some_params(key):  # only what is returned gets computed (and compiled): XLA's CPU compile is slow
        params = model.init(key, jnp.zeros((1, 17, 17, 3)), train=False)["params"]
        biases = [v for p, v in jax.tree_util.tree_leaves_with_path(params) if "bias" in jax.tree_util.keystr(p)]
        return params["features_12"]["expand3x3"]["kernel"], params["classifier_1"]["kernel"], biases

    k, head, biases = some_params(jax.random.PRNGKey(0))
    # kaiming_uniform_ (a=0, fan_in): U(-sqrt(6 / fan_in), sqrt(6 / fan_in)); fan_in of expand3x3 in fire 9: 64*9
    bound = np.sqrt(6 / (64 * 9))
    assert k.shape == (3, 3, 64, 256)
    assert bound * 0.98 < float(jnp.abs(k).max()) <= bound * (1 + 1e-6)
    assert abs(float(jnp.std(k)) - bound / np.sqrt(3)) < 0.03 * bound
    assert head.shape == (1, 1, 512, 12) and abs(float(jnp.std(head)) - 0.01) < 0.001  # final conv N(0, 0.01)
    assert len(biases) == 1 + 8 * 3 + 1 and all(float(jnp.abs(b).max()) == 0.0 for b in biases)


def test_shapes_and_sown_stages_at_dataset_size():
    model = architectures.create("squeezenet1_1", num_classes=12)
    x = jnp.zeros((2, 40, 24, 3))  # the dataset's native (height, width)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert set(variables) == {"params"}  # no BatchNorm
    logits, state = jax.eval_shape(lambda v: model.apply(v, x, train=False, mutable=["intermediates"]), variables)
    assert logits.shape == (2, 12) and logits.dtype == jnp.float32
    shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
    assert set(shapes) == set(TORCH_STAGES)
    # 40x24: conv3 s2 -> 19x11, pools (ceil mode) -> 9x5 -> 4x2 -> 2x1
    assert shapes["features.2"] == (2, 9, 5, 64) and shapes["features.5"] == (2, 4, 2, 128)
    assert shapes["features.8"] == (2, 2, 1, 256)
    assert shapes["features.12"] == (2, 2, 1, 512) and shapes["classifier"] == (2, 1, 1, 12)


def test_dropout_only_in_training():
    model = architectures.create("squeezenet1_1", num_classes=12)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 17, 17, 3))
    variables = numpy_variables(model, x)
    apply = jax.jit(lambda v, x, r, train: model.apply(v, x, train=train, rngs={"dropout": r}), static_argnums=3)
    eval1 = apply(variables, x, jax.random.PRNGKey(2), False)
    eval2 = apply(variables, x, jax.random.PRNGKey(3), False)
    np.testing.assert_array_equal(np.asarray(eval1), np.asarray(eval2))
    assert float(jnp.abs(eval1).max()) > 0.01
    train = apply(variables, x, jax.random.PRNGKey(2), True)
    assert float(jnp.abs(train - eval1).max()) > 1e-3


def test_bfloat16_compute_keeps_float32_logits():
    model32 = architectures.create("squeezenet1_1", num_classes=12)
    model16 = architectures.create("squeezenet1_1", num_classes=12, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 40, 24, 3))
    variables = numpy_variables(model32, x, seed=1)
    ref = jax.jit(lambda v, x: model32.apply(v, x, train=False))(variables, x)
    logits = jax.jit(lambda v, x: model16.apply(v, x, train=False))(variables, x)
    assert logits.dtype == jnp.float32 and float(jnp.abs(ref).max()) > 0.05
    assert float(jnp.abs(logits - ref).max()) <= 0.05 * float(jnp.abs(ref).max())


@pytest.mark.parametrize("arch, smallest", [("squeezenet1_0", 21), ("squeezenet1_1", 17)])
def test_min_input_size(arch, smallest):
    model = architectures.create(arch, num_classes=2)
    def init(h, w):
        return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)), train=False))

    init(smallest, smallest)  # accepted
    for h, w in ((smallest - 1, smallest), (smallest, smallest - 1)):
        with pytest.raises(ConfigError, match=f"{arch} needs inputs of at least {smallest}x{smallest}"):
            init(h, w)
    with pytest.raises(ConfigError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((smallest, smallest, 3)), train=False)


@pytest.mark.needs_torch
@pytest.mark.parametrize("arch, smallest", [("squeezenet1_0", 21), ("squeezenet1_1", 17)])
def test_min_input_size_is_torchvisions(arch, smallest):
    require_torch()
    import torch

    model = torch_model_for(arch, num_classes=2)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, smallest, smallest)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, smallest - 1, smallest - 1))


def assert_logits_relative(diffs, rtol=1e-4):
    """Logits also within ``rtol`` of torch's own scale (randomly initialised logits are far below 1)."""
    logits = [d for d in diffs if d.what.endswith("logits")]
    assert logits and all(d.max_abs_diff <= rtol * d.scale for d in logits), [str(d) for d in logits]


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_squeezenet1_1_eval_parity(impl):
    # 227: the study's size; 40x24: the dataset's native (height, width); 12 classes as in the dataset
    model = torch_model_for("squeezenet1_1", num_classes=12)
    assert_logits_relative(assert_eval_parity("squeezenet1_1", model, TORCH_STAGES, sizes=[(227, 227), (40, 24)],
                                              impl=impl))


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_squeezenet1_0_eval_parity(impl):
    model = torch_model_for("squeezenet1_0", seed=1)
    assert_logits_relative(
        assert_eval_parity("squeezenet1_0", model, TORCH_STAGES, sizes=[(227, 227), (61, 75)], batch=3, impl=impl)
    )


@pytest.mark.needs_torch
@pytest.mark.parametrize("arch", ["squeezenet1_0", "squeezenet1_1"])
@pytest.mark.parametrize("impl", IMPLS)
def test_train_mode_parity_without_dropout(arch, impl):
    # no BatchNorm: with dropout off, train mode must compute what torch's train mode computes
    require_torch()
    import torch

    torch_model = disable_dropout(torch_model_for(arch, seed=2, num_classes=5)).train()
    variables = weights_convert.convert(arch, torch_model)
    model = architectures.create(arch, num_classes=5, dropout_rate=0.0, impl=impl)
    x = random_input(3, 48, 36, seed=7)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(x)).numpy()
    ours = jax.jit(lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)}))(
        variables, jnp.asarray(to_nhwc(x))
    )
    assert_logits_relative(check([compare(f"{arch} train 48x36 logits", ours, ref)]))


def assert_gradients_close(grads, ref_grads):
    """Every gradient leaf nonzero in the reference and equal to it within 1e-4 of its largest entry."""
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
        scale = float(jnp.abs(r).max())
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-4 * scale,
                                   err_msg=jax.tree_util.keystr(path))
