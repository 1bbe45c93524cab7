"""``python -m weights_convert`` end to end: --help, a real torch checkpoint converted in a subprocess
reproduces torch's logits, and real ``.pth`` damage (truncation) gives a clean one-line error."""

import json
import os
from importlib import metadata
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import architectures
import weights_convert
from hotspot_jax.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weights_convert", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=600,
    )


def test_help_lists_every_option_with_its_default():
    proc = run_module("--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    for option, default in [("--arch", "default: the architecture of --weights"), ("--checkpoint", "no default"),
                            ("--weights", "no default"), ("--out", "required"),
                            ("--num-classes", "default: the checkpoint's"), ("--input-size", "default: the architecture's"),
                            ("--seed", "default: 0"), ("--overwrite", "default: off")]:
        assert option in text and default in text, (option, default)
    assert "resnet50" in text and "resnet=resnet50" in text


@pytest.mark.slow
@pytest.mark.needs_torch
def test_cli_converts_a_torchvision_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from parity_utils import random_input, to_nhwc, torch_model_for

    model = torch_model_for("resnet50", seed=3)
    pth = tmp_path / "resnet50-random.pth"
    torch.save(model.state_dict(), pth)
    out = tmp_path / "flax"
    proc = run_module("--arch", "resnet", "--checkpoint", str(pth), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "resnet50: 267 tensors from" in proc.stdout and "1000-class head converted" in proc.stdout

    variables, meta = weights_convert.load_variables(out)
    assert meta["arch"] == "resnet50" and meta["num_classes"] == 1000 and meta["head_replaced"] is False
    assert meta["source_sha256"] == weights_convert.file_sha256(pth)
    assert meta["torchvision"] == metadata.version("torchvision") and meta["torch"] == metadata.version("torch")
    assert json.loads((out / "meta.json").read_text()) == meta

    x = random_input(2, 224, 224, seed=5)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    flax_model = architectures.create("resnet50")
    logits = np.asarray(jax.jit(lambda v, x: flax_model.apply(v, x, train=False))(variables, jnp.asarray(to_nhwc(x))))
    diff = float(np.abs(logits - ref).max())
    print(f"resnet50 CLI-converted logits: max|diff|={diff:.3g}, max|torch|={np.abs(ref).max():.3g}")
    assert diff <= 1e-4 * max(1.0, float(np.abs(ref).max()))

    # a new head for transfer learning, in the same call (the existing output needs --overwrite)
    proc = run_module("--arch", "resnet50", "--checkpoint", str(pth), "--out", str(out), "--num-classes", "12",
                      "--seed", "4", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    variables12, meta12 = weights_convert.load_variables(out)
    assert (meta12["num_classes"], meta12["source_num_classes"], meta12["head_replaced"], meta12["head_seed"]) == (
        12, 1000, True, 4)
    assert variables12["params"]["fc"]["kernel"].shape == (2048, 12)
    assert "resnet50: 265 tensors from" in proc.stdout and "new 12-class head (seed 4)" in proc.stdout
    np.testing.assert_array_equal(variables12["params"]["layer3_2"]["conv2"]["kernel"],
                                  variables["params"]["layer3_2"]["conv2"]["kernel"])


@pytest.mark.needs_torch
def test_truncated_and_foreign_torch_files(tmp_path):
    torch = pytest.importorskip("torch")
    pth = tmp_path / "small.pth"
    torch.save({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, pth)
    assert set(weights_convert.load_state_dict(pth)) == {"fc.weight", "fc.bias"}
    data = pth.read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) - 40])
    with pytest.raises(ConfigError, match=r"cut\.pth is truncated or corrupt"):
        weights_convert.load_state_dict(tmp_path / "cut.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")  # a torch file that is no state_dict
    with pytest.raises(ConfigError, match=r"list\.pth holds a list, not a state_dict"):
        weights_convert.load_state_dict(tmp_path / "list.pth")
    legacy = tmp_path / "legacy.pth"  # torch's pre-1.6 pickle format, cut short
    torch.save({"w": torch.ones(1000)}, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:200])
    with pytest.raises(ConfigError, match=r"cannot read checkpoint .*legacy\.pth: .*truncated download"):
        weights_convert.load_state_dict(legacy)
    proc = run_module("--arch", "resnet18", "--checkpoint", str(tmp_path / "cut.pth"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: checkpoint file ")
    assert "truncated or corrupt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
