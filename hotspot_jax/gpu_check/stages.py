"""The GPU check's stages: what each runs, in which order, for how long at most."""

from __future__ import annotations

import dataclasses
from pathlib import Path

PARITY_TESTS = ("test_alexnet.py", "test_googlenet.py", "test_shufflenet_v2.py", "test_squeezenet.py",
                "test_resnet.py", "test_mobilenet_v2.py")
TRAIN_ARCH = "squeezenet1_1"
# every stage's process: JAX takes GPU memory as it needs it (torch shares the card in two stages), and the
# XLA:CPU defaults of hotspot_jax.xla_flags stay out of a GPU run
BASE_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "HOTSPOT_XLA_DEFAULTS": "0", "PYTHONUNBUFFERED": "1"}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One command of the check: its name (and log file's), argv, time limit, extra environment, and the
    files or folders it writes under the output folder (removed before it runs: no result of an earlier run
    is ever read as this one's)."""

    name: str
    argv: tuple[str, ...]
    timeout_s: int
    env: tuple[tuple[str, str], ...] = ()
    outputs: tuple[str, ...] = ()


def stages(out: Path, data: str, python: str, tiny: bool = False) -> list[Stage]:
    """The check's stages in the order they run; ``tiny``: toy sizes for a CPU smoke test."""
    train = [python, "scripts/train.py", "--arch", TRAIN_ARCH, "--data", data, "--no-progress", "--overwrite",
             "--workdir", str(out / f"train_{TRAIN_ARCH}")]
    parity = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "parity", "-rs",
              "--junitxml", str(out / "parity.xml")]
    depthwise = [python, "-m", "hotspot_jax.bench.depthwise_forms", "--json", str(out / "depthwise.json")]
    bench = [python, "scripts/benchmark.py", "--no-progress", "--json", str(out / "benchmark.json")]
    if tiny:
        train += ["--image-size", "32", "--epochs", "1", "--limit-train", "64", "--limit-eval", "32"]
        parity += ["tests/test_squeezenet.py"]
        depthwise += ["--batch-size", "2", "--image-size", "32", "--reps", "1", "--layers", "2"]
        bench += ["--archs", "squeezenet", "--image-sizes", "32", "--batch-size", "4", "--reps", "1",
                  "--dtypes", "float32,bfloat16", "--peak-size", "256"]
    else:  # the study's protocol: 227 px, 40 epochs, batch 32, SGD momentum, lr 1e-3 (train.py's defaults)
        parity += [f"tests/{name}" for name in PARITY_TESTS]
        bench += ["--image-sizes", "224", "--dtypes", "float32,bfloat16", "--reps", "5"]
    # float32 products at full precision: the GPU's default (TF32 on Ampere and later) is not torch's CPU float32
    highest = (("JAX_DEFAULT_MATMUL_PRECISION", "highest"),)
    return [
        Stage("environment", (python, "-m", "hotspot_jax.gpu_check.environment", str(out / "environment.json")), 120,
              outputs=("environment.json",)),
        Stage("train", tuple(train), 300, outputs=(f"train_{TRAIN_ARCH}",)),
        Stage("parity", tuple(parity), 180, highest, outputs=("parity.xml",)),
        Stage("depthwise", tuple(depthwise), 90, outputs=("depthwise.json",)),
        Stage("benchmark", tuple(bench), 420, outputs=("benchmark.json",)),
    ]
