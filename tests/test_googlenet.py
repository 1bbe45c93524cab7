"""GoogLeNet: param counts (with and without aux heads), registry, init, aux heads, transform_input, min input
size, torchvision parity (eval logits and stages, train-mode BN statistics, aux logits)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
import weights_convert
from architectures.ops.conv import Conv
from architectures.googlenet import TORCH_STAGES
from hotspot_jax.errors import ConfigError
from parity_utils import (
    IMPLS,
    assert_eval_parity,
    assert_param_count,
    assert_train_parity,
    check,
    compare,
    flax_param_count,
    random_input,
    require_torch,
    to_nhwc,
    torch_model_for,
)

PUBLISHED = 6_624_904  # GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"]: 1000 classes, no aux heads
WITH_AUX = 13_004_888  # torchvision.models.GoogLeNet(aux_logits=True): + aux1 3,188,968 + aux2 3,191,016
TORCH_KWARGS = {"init_weights": True}  # torchvision warns unless the (default) init is asked for explicitly


def test_param_counts():
    assert architectures.get("googlenet").num_params == PUBLISHED
    assert assert_param_count("googlenet", PUBLISHED) == PUBLISHED  # default: aux_logits=False
    assert flax_param_count("googlenet", aux_logits=True) == WITH_AUX
    aux_head = 512 * 128 + 2 * 128 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000  # aux1 (aux2 differs by 16*128)
    assert WITH_AUX - PUBLISHED == aux_head + (aux_head + 16 * 128)


@pytest.mark.needs_torch
def test_param_counts_match_torchvision():
    require_torch()
    import torchvision

    weights = torchvision.models.GoogLeNet_Weights.IMAGENET1K_V1
    assert weights.meta["num_params"] == PUBLISHED
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(torchvision.models.GoogLeNet(aux_logits=False, init_weights=False)) == PUBLISHED
    assert count(torchvision.models.GoogLeNet(aux_logits=True, init_weights=False)) == WITH_AUX
    spec, w = architectures.get("googlenet"), architectures.weight_spec("googlenet.tv_in1k")
    assert weights.meta["min_size"] == (spec.min_input_size, spec.min_input_size)
    assert weights.meta["_metrics"]["ImageNet-1K"]["acc@1"] == w.acc1
    assert weights.url.rsplit("/", 1)[-1] == w.file_name


def test_registry_entries():
    spec = architectures.get("googlenet")
    assert (spec.input_size, spec.min_input_size, spec.first_conv) == (224, 15, "conv1/conv")
    assert spec.classifier[-1] == "fc" and set(spec.classifier) == {"fc", "aux1", "aux2"}
    assert "transform_input=True" in spec.description
    w = architectures.weight_spec("googlenet.tv_in1k")
    assert (w.file_name, w.acc1, w.resize, w.crop, w.num_params, w.torchvision_enum) == (
        "googlenet-1378be20.pth", 69.778, 256, 224, PUBLISHED, "GoogLeNet_Weights.IMAGENET1K_V1"
    )
    model = architectures.create("googlenet", num_classes=3)
    assert (model.aux_logits, model.transform_input, model.dropout_rate, model.aux_dropout_rate) == (
        False, False, 0.2, 0.7
    )


def test_torchvision_init():
    model = architectures.create("googlenet", num_classes=12, aux_logits=True)

    @jax.jit
    def some_variables(key):  # only what is returned gets computed (and compiled): XLA's CPU compile is slow
        v = model.init(key, jnp.zeros((1, 15, 15, 3)), train=False)
        p = v["params"]
        return (p["inception4b"]["branch2_1"]["conv"], p["fc"], p["aux1"]["fc1"],
                p["inception4b"]["branch2_1"]["bn"], v["batch_stats"]["conv1"]["bn"])

    conv, fc, aux_fc1, bn, bn_stats = some_variables(jax.random.PRNGKey(0))
    assert set(conv) == {"kernel"}  # BasicConv2d's conv has no bias
    kernel = conv["kernel"]
    # conv and linear weights: trunc_normal_(std=0.01, a=-2, b=2), i.e. effectively N(0, 0.01)
    assert kernel.shape == (3, 3, 112, 224)
    for w in (kernel, fc["kernel"], aux_fc1["kernel"]):
        assert abs(float(jnp.std(w)) - 0.01) < 0.0005 and float(jnp.abs(w).max()) < 0.08
    assert fc["kernel"].shape == (1024, 12) and aux_fc1["kernel"].shape == (2048, 1024)
    # Linear biases keep torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for b, fan_in in ((fc["bias"], 1024), (aux_fc1["bias"], 2048)):
        bound = 1 / np.sqrt(fan_in)
        assert float(jnp.abs(b).max()) <= bound * (1 + 1e-6) and float(jnp.std(b)) > 0.3 * bound
    assert float(jnp.abs(bn["scale"] - 1).max()) == 0.0 and float(jnp.abs(bn["bias"]).max()) == 0.0
    assert float(jnp.abs(bn_stats["mean"]).max()) == 0.0 and float(jnp.abs(bn_stats["var"] - 1).max()) == 0.0


def test_shapes_stages_and_aux_heads_only_when_asked_and_training():
    x = jnp.zeros((2, 224, 224, 3))
    plain = architectures.create("googlenet", num_classes=12)
    aux = architectures.create("googlenet", num_classes=12, aux_logits=True)
    v_plain = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), x, train=False))
    v_aux = jax.eval_shape(lambda: aux.init(jax.random.PRNGKey(0), x, train=False))  # eval init still builds them
    assert "aux1" not in v_plain["params"] and "aux1" not in v_plain["batch_stats"]
    assert v_aux["params"]["aux1"]["fc1"]["kernel"].shape == (2048, 1024)
    assert v_aux["params"]["aux2"]["conv"]["conv"]["kernel"].shape == (1, 1, 528, 128)
    assert v_aux["batch_stats"]["aux2"]["conv"]["bn"]["var"].shape == (128,)
    # a train-mode init (the converter's) must not leave sown aux logits behind in the variables
    v_train = jax.eval_shape(lambda: aux.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                                              x, train=True))
    assert set(v_train) == {"params", "batch_stats"}

    rngs = {"dropout": jax.random.PRNGKey(0)}
    logits, state = jax.eval_shape(
        lambda v: aux.apply(v, x, train=False, mutable=["intermediates", "aux_logits"]), v_aux
    )
    assert logits.shape == (2, 12) and "aux_logits" not in state
    shapes = {k: v[0].shape for k, v in state["intermediates"].items()}
    assert set(shapes) == set(TORCH_STAGES)
    assert shapes["conv1_out"] == (2, 112, 112, 64) and shapes["maxpool1"] == (2, 56, 56, 64)
    assert shapes["inception3b_out"] == (2, 28, 28, 480) and shapes["maxpool3"] == (2, 14, 14, 480)
    assert shapes["inception4e_out"] == (2, 14, 14, 832) and shapes["maxpool4"] == (2, 7, 7, 832)
    assert shapes["inception5b_out"] == (2, 7, 7, 1024) and shapes["avgpool"] == (2, 1, 1, 1024)

    logits, state = jax.eval_shape(
        lambda v: aux.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats", "aux_logits"]), v_aux
    )
    assert logits.shape == (2, 12)
    assert jax.tree.map(lambda a: a.shape, state["aux_logits"]) == {
        "aux1": {"logits": ((2, 12),)}, "aux2": {"logits": ((2, 12),)}
    }
    _, state = jax.eval_shape(
        lambda v: plain.apply(v, x, train=True, rngs=rngs, mutable=["batch_stats", "aux_logits"]), v_plain
    )
    assert "aux_logits" not in state


def test_bn_axis_name_and_dtype_reach_every_layer():
    # every BatchNorm must average over pmap devices, every conv/dense compute in the requested dtype
    model = architectures.create("googlenet", num_classes=3, aux_logits=True, bn_axis_name="d", dtype=jnp.bfloat16)
    seen = []

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__":
            seen.append(context.module)
        return next_fun(*args, **kwargs)

    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda: model.init(keys, jnp.zeros((2, 15, 15, 3)), train=True))
    bns = [m for m in seen if "bn" == m.name]
    convs = [m for m in seen if isinstance(m, (Conv, nn.Dense))]
    assert len(bns) == 59 and len(convs) == 59 + 5  # 57 + 2 aux BasicConv2d; fc, aux fc1/fc2
    assert all(m.axis_name == "d" and m.dtype == jnp.bfloat16 for m in bns)
    assert all(m.dtype == jnp.bfloat16 and m.param_dtype == jnp.float32 for m in convs)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
    logits = jax.eval_shape(
        lambda v: model.apply(v, jnp.zeros((2, 15, 15, 3)), train=False), variables
    )
    assert logits.dtype == jnp.float32


def test_min_input_size():
    model = architectures.create("googlenet", num_classes=2, aux_logits=True)
    def init(h, w):
        return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, h, w, 3)), train=False))

    init(15, 15)  # accepted, aux heads included (adaptive pooling of a 1x1 map up to 4x4)
    for h, w in ((14, 15), (15, 14)):
        with pytest.raises(ConfigError, match="googlenet needs inputs of at least 15x15"):
            init(h, w)
    with pytest.raises(ConfigError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((15, 15, 3)), train=False)


@pytest.mark.needs_torch
def test_min_input_size_is_torchvisions():
    require_torch()
    import torch

    model = torch_model_for("googlenet", num_classes=2, **TORCH_KWARGS)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 15, 15)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            model(torch.zeros(1, 3, 14, 14))


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_parity_224(impl):
    # torch's model has aux heads (constructor default); ours (aux_logits=False) converts without them
    model = torch_model_for("googlenet", **TORCH_KWARGS)
    assert_eval_parity("googlenet", model, TORCH_STAGES, sizes=[(224, 224)], impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_eval_parity_dataset_size_with_transform_input(impl):
    # 40x24: the dataset's native (height, width), 12 classes; transform_input=True as torchvision sets it
    # for its ImageNet weights (one compile for both checks: XLA's CPU compile of GoogLeNet is slow)
    model = torch_model_for("googlenet", seed=3, num_classes=12, transform_input=True, **TORCH_KWARGS)
    assert_eval_parity("googlenet", model, TORCH_STAGES, sizes=[(40, 24)], batch=3, transform_input=True, impl=impl)


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_train_parity_with_aux_heads(impl):
    # BN on batch statistics (incl. the aux heads' BN, which torch runs in training), dropout off
    model = torch_model_for("googlenet", seed=1, **TORCH_KWARGS)
    assert_train_parity(
        "googlenet", model, size=(64, 48), batch=4, aux_logits=True, dropout_rate=0.0, aux_dropout_rate=0.0,
        impl=impl,
    )


@pytest.mark.needs_torch
@pytest.mark.parametrize("impl", IMPLS)
def test_aux_logits_parity_in_training(impl):
    # torch's train-mode GoogLeNetOutputs(logits, aux_logits2, aux_logits1) vs our sown aux logits
    require_torch()
    import torch

    torch_model = torch_model_for("googlenet", seed=2, num_classes=7, **TORCH_KWARGS)
    for m in torch_model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    options = dict(aux_logits=True, dropout_rate=0.0, aux_dropout_rate=0.0)
    variables = weights_convert.convert("googlenet", torch_model, **options)
    model = architectures.create("googlenet", num_classes=7, impl=impl, **options)
    x = random_input(4, 57, 41, seed=5)  # 4x3 maps into the aux heads: adaptive pooling up to 4x4
    with torch.no_grad():
        out = torch_model.train()(torch.from_numpy(x))
    logits, state = jax.jit(
        lambda v, x: model.apply(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                                 mutable=["batch_stats", "aux_logits"])
    )(variables, jnp.asarray(to_nhwc(x)))
    aux = state["aux_logits"]
    check([
        compare("googlenet train 57x41 logits", logits, out.logits.numpy()),
        compare("googlenet train 57x41 aux1", aux["aux1"]["logits"][0], out.aux_logits1.numpy()),
        compare("googlenet train 57x41 aux2", aux["aux2"]["logits"][0], out.aux_logits2.numpy()),
    ])
