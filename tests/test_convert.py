"""Converter: the naming/layout rule, strictness (each error message), head replacement, orbax round trip.

Most tests build torchvision-format state_dicts as numpy arrays from the Flax shapes (no torch);
tests that write real ``.pth`` files need torch and skip without it.
"""

import re
import zipfile

import jax
import numpy as np
import pytest

import architectures
import weights_convert
from hotspot_jax.cli import run_cli
from hotspot_jax.errors import ConfigError, HotspotError
from weights_convert import rules
from weights_convert.__main__ import main as cli_main


def fake_state_dict(arch: str, num_classes: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """A random state_dict in torchvision's names and layouts, built from the Flax shapes by the inverse rule."""
    rng = np.random.default_rng(seed)
    spec = architectures.get(arch)
    out = {}
    for path, leaf in weights_convert.variable_shapes(arch, num_classes, spec.input_size).items():
        collection, *modules, leaf_name = path
        module = re.sub(r"_(\d+)", r".\1", ".".join(modules))
        name = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}.get(
            leaf_name, leaf_name)
        shape = tuple(leaf.shape)
        if len(shape) == 4:
            shape = (shape[3], shape[2], shape[0], shape[1])  # HWIO -> OIHW
        elif len(shape) == 2:
            shape = shape[::-1]
        out[f"{module}.{name}"] = rng.standard_normal(shape).astype(np.float32)
        if name == "running_var":
            out[f"{module}.num_batches_tracked"] = np.array(7, np.int64)
    return out


@pytest.fixture(scope="module")
def sd18():
    return fake_state_dict("resnet18")


def test_rule_maps_torchvision_names():
    assert rules.flax_path("features.3.squeeze.weight", 4) == ("params", "features_3", "squeeze", "kernel")
    assert rules.flax_path("layer1.0.downsample.1.running_var", 1) == (
        "batch_stats", "layer1_0", "downsample_1", "var")
    assert rules.flax_path("features.2.conv.0.0.weight", 4) == ("params", "features_2", "conv_0_0", "kernel")
    assert rules.flax_path("bn1.weight", 1) == ("params", "bn1", "scale")
    assert rules.flax_path("fc.bias", 1) == ("params", "fc", "bias")


def test_layout_conv_linear_depthwise():
    conv = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)  # OIHW
    hwio = rules.flax_layout("a.weight", conv)
    assert hwio.shape == (5, 7, 3, 2) and hwio[4, 6, 2, 1] == conv[1, 2, 4, 6]
    depthwise = np.ones((32, 1, 3, 3), np.float32)
    assert rules.flax_layout("a.weight", depthwise).shape == (3, 3, 1, 32)
    linear = np.arange(6, dtype=np.float32).reshape(2, 3)  # (out, in)
    assert rules.flax_layout("fc.weight", linear).shape == (3, 2) and rules.flax_layout("fc.weight", linear)[2, 1] == 5


def test_convert_places_every_tensor(sd18):
    variables, info = weights_convert.convert_with_info("resnet18", sd18)
    p, s = variables["params"], variables["batch_stats"]
    np.testing.assert_array_equal(p["layer2_0"]["conv2"]["kernel"], sd18["layer2.0.conv2.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["layer2_0"]["downsample_0"]["kernel"],
                                  sd18["layer2.0.downsample.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(p["fc"]["kernel"], sd18["fc.weight"].T)
    np.testing.assert_array_equal(p["bn1"]["scale"], sd18["bn1.weight"])
    np.testing.assert_array_equal(s["layer4_1"]["bn2"]["mean"], sd18["layer4.1.bn2.running_mean"])
    np.testing.assert_array_equal(s["layer4_1"]["bn2"]["var"], sd18["layer4.1.bn2.running_var"])
    n_tensors = sum(1 for k in sd18 if not k.endswith("num_batches_tracked"))
    assert info.num_tensors == n_tensors == len(jax.tree_util.tree_leaves(variables))
    assert (info.num_classes, info.source_num_classes, info.head_replaced) == (1000, 1000, False)


def test_wrappers_and_dataparallel_prefix_are_accepted(sd18):
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd18.items()}}
    variables = weights_convert.convert("resnet18", wrapped)
    np.testing.assert_array_equal(variables["params"]["conv1"]["kernel"], sd18["conv1.weight"].transpose(2, 3, 1, 0))


def test_missing_key_is_named(sd18):
    bad = {k: v for k, v in sd18.items() if k != "layer3.1.bn1.running_var"}
    with pytest.raises(ConfigError, match=r"1 missing: 'layer3\.1\.bn1\.running_var' "
                                          r"\(-> batch_stats/layer3_1/bn1/var \(256,\)\)") as err:
        weights_convert.convert("resnet18", bad)
    assert "unexpected" not in str(err.value) and "mis-shaped" not in str(err.value)


def test_extra_key_is_named(sd18):
    bad = dict(sd18, **{"layer5.0.conv1.weight": np.zeros((8, 8, 3, 3), np.float32)})
    with pytest.raises(ConfigError, match=r"1 unexpected: 'layer5\.0\.conv1\.weight' \(8, 8, 3, 3\)") as err:
        weights_convert.convert("resnet18", bad)
    assert "missing" not in str(err.value)


def test_misshaped_key_is_named(sd18):
    bad = dict(sd18, **{"layer1.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32)})
    with pytest.raises(ConfigError, match=r"1 mis-shaped: 'layer1\.0\.conv1\.weight' \(64, 64, 1, 1\) -> "
                                          r"params/layer1_0/conv1/kernel is \(1, 1, 64, 64\), "
                                          r"expected \(3, 3, 64, 64\)"):
        weights_convert.convert("resnet18", bad)


def test_all_problems_in_one_error(sd18):
    bad = {k: v for k, v in sd18.items() if k != "fc.bias"}
    bad["extra.weight"] = np.zeros((2, 2), np.float32)
    bad["bn1.running_mean"] = np.zeros(3, np.float32)
    with pytest.raises(ConfigError) as err:
        weights_convert.convert("resnet18", bad)
    msg = str(err.value)
    assert "1 missing: 'fc.bias'" in msg and "1 unexpected: 'extra.weight'" in msg
    assert "1 mis-shaped: 'bn1.running_mean' (3,)" in msg


def test_other_architecture_checkpoint_is_recognised(sd18):
    with pytest.raises(ConfigError) as err:
        weights_convert.convert("resnet50", sd18)
    msg = str(err.value)
    assert msg.startswith("the state_dict does not fit resnet50 (num_classes=1000): Its 11,689,512 parameters "
                          "match resnet18: is it a checkpoint of another architecture? Details: ")
    assert "165 missing: 'layer1.0.bn3.bias'" in msg and "... and 153 more" in msg
    assert "24 mis-shaped: 'fc.weight' (1000, 512) -> params/fc/kernel is (512, 1000), expected (2048, 1000)" in msg
    assert "'layer1.0.conv1.weight' (64, 64, 3, 3) -> params/layer1_0/conv1/kernel is (3, 3, 64, 64), " \
           "expected (1, 1, 64, 64)" in msg


def test_head_replacement_keeps_the_rest(sd18):
    variables, info = weights_convert.convert_with_info("resnet18", sd18, num_classes=12, rng=jax.random.PRNGKey(3))
    assert (info.num_classes, info.source_num_classes, info.head_replaced) == (12, 1000, True)
    fc = variables["params"]["fc"]
    assert fc["kernel"].shape == (512, 12) and fc["bias"].shape == (12,)
    bound = 1 / np.sqrt(512)  # torch's Linear default init
    assert 0.9 * bound < float(np.abs(fc["kernel"]).max()) <= bound
    assert float(np.abs(fc["bias"]).max()) <= bound
    np.testing.assert_array_equal(variables["params"]["layer4_1"]["conv2"]["kernel"],
                                  sd18["layer4.1.conv2.weight"].transpose(2, 3, 1, 0))
    again = weights_convert.convert("resnet18", sd18, num_classes=12, rng=jax.random.PRNGKey(3))
    other = weights_convert.convert("resnet18", sd18, num_classes=12, rng=jax.random.PRNGKey(4))
    np.testing.assert_array_equal(again["params"]["fc"]["kernel"], fc["kernel"])
    assert not np.array_equal(other["params"]["fc"]["kernel"], fc["kernel"])


def test_head_of_a_fine_tuned_checkpoint_is_kept():
    sd = fake_state_dict("resnet18", num_classes=12)
    variables, info = weights_convert.convert_with_info("resnet18", sd)  # classes read off the checkpoint
    assert (info.num_classes, info.head_replaced) == (12, False)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], sd["fc.bias"])


def test_checkpoint_without_head_needs_num_classes(sd18):
    backbone = {k: v for k, v in sd18.items() if not k.startswith("fc.")}
    with pytest.raises(ConfigError, match="has no classifier"):
        weights_convert.convert("resnet18", backbone)
    variables = weights_convert.convert("resnet18", backbone, num_classes=5)
    assert variables["params"]["fc"]["kernel"].shape == (512, 5)


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        weights_convert.load_state_dict(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"empty\.pth is empty"):
        weights_convert.load_state_dict(tmp_path / "empty.pth")
    (tmp_path / "image.pth").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ConfigError, match=r"image\.pth is not a torch checkpoint \(expected a \.pth file"):
        weights_convert.load_state_dict(tmp_path / "image.pth")
    with pytest.raises(ConfigError, match="cannot read weights from a int"):
        weights_convert.load_state_dict(3)
    with pytest.raises(ConfigError, match="entry 'a' is a str, not a tensor"):
        weights_convert.load_state_dict({"a": "text"})
    with pytest.raises(ConfigError, match="unknown architecture 'resnet51'"):
        weights_convert.convert("resnet51", {"a": np.zeros(1)})


def test_truncated_zip_is_detected_before_torch(tmp_path):
    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w") as zf:  # torch.save's container format
        zf.writestr("archive/data.pkl", bytes(5000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"model\.pth is truncated or corrupt"):
        weights_convert.load_state_dict(path)


def test_orbax_round_trip(tmp_path, sd18):
    variables = weights_convert.convert("resnet18", sd18, num_classes=4)
    out = weights_convert.save_variables(tmp_path / "ckpt", variables, arch="resnet18", num_classes=4,
                                         meta={"source_sha256": "ab" * 32})
    loaded, meta = weights_convert.load_variables(out)
    assert (meta["arch"], meta["num_classes"], meta["source_sha256"]) == ("resnet18", 4, "ab" * 32)
    assert meta["jax"] == jax.__version__
    flat_a = dict(jax.tree_util.tree_leaves_with_path(variables))
    flat_b = dict(jax.tree_util.tree_leaves_with_path(loaded))
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_b[key]), np.asarray(flat_a[key]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind
    with pytest.raises(ConfigError, match="already exists and is not empty; choose another --out, or add --overwrite"):
        weights_convert.save_variables(out, variables, arch="resnet18", num_classes=4)
    with pytest.raises(ConfigError, match="is not a converted checkpoint"):
        weights_convert.load_variables(tmp_path)
    (out / "meta.json").write_text("{broken")
    with pytest.raises(ConfigError, match="meta.json is not valid JSON"):
        weights_convert.load_variables(out)


def test_cli_weights_offline_fails_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOTSPOT_OFFLINE", "1")
    code = run_cli(cli_main, ["--weights", "resnet50.tv_in1k", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: weights resnet50.tv_in1k")
    assert "resnet50-0676ba61.pth" in err and "pass --checkpoint FILE.pth" in err
    assert not (tmp_path / "out").exists()


def test_cli_weights_cache_hash_is_checked(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(b"PK\x03\x04 not the real file")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code = run_cli(cli_main, ["--weights", "resnet18.tv_in1k", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "resnet18-f37072fd.pth is damaged: its sha256 starts with" in err


def test_cli_argument_errors(tmp_path, capsys):
    code = run_cli(cli_main, ["--checkpoint", "x.pth", "--out", str(tmp_path / "o")])
    assert code == 2 and "--arch is required with --checkpoint" in capsys.readouterr().err
    code = run_cli(cli_main, ["--arch", "resnet18", "--weights", "resnet50.tv_in1k", "--out", str(tmp_path / "o")])
    assert code == 2 and "are for resnet50, not --arch resnet18" in capsys.readouterr().err
    (tmp_path / "notes.pth").write_text("hello")
    code = run_cli(cli_main, ["--arch", "resnet18", "--checkpoint", str(tmp_path / "notes.pth"),
                              "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "notes.pth is not a torch checkpoint" in err and "Traceback" not in err


def test_errors_are_hotspot_errors():
    assert issubclass(ConfigError, HotspotError)
