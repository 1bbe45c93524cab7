"""The torchvision twin of :mod:`hotspot_jax.bench.jax_steps`: same model, optimiser, batch and input work.

Each step does what the JAX step does: uint8 -> [0, 1], bilinear resize (``align_corners=False``, no
antialias, like ``jax.image.resize``), grey -> RGB, ImageNet normalisation, forward; training adds
cross-entropy, backward and an SGD step (momentum 0.9, weight decay 1e-4, as ``sgd_momentum``);
inference runs under ``torch.inference_mode`` and ends with the softmax, as the JAX eval step does.
Tensors are NCHW (torchvision's default layout, the one its users get).

``dtype="bfloat16"`` runs forward and loss under ``torch.autocast`` (parameters and optimiser state stay
float32): torch's counterpart of the Flax models' compute dtype. ``device="cuda"`` puts the model, the
optimiser state and the batch on the GPU; every step ends by reading a value back, which waits for the GPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

from hotspot_jax.bench.batch import SyntheticBatch
from hotspot_jax.bench.timing import warm_up
from hotspot_jax.errors import ConfigError

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def import_torch():
    """torch and torchvision, or a ConfigError saying how to install them."""
    try:
        import torch
        import torchvision
    except ImportError as err:
        raise ConfigError(
            f"the PyTorch side of the benchmark needs torch and torchvision ({err}); "
            "install them with `pip install -e '.[torch]'`, or pass --no-torch"
        ) from None
    return torch, torchvision


TORCH_DEVICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str, jax_backend: str) -> str:
    """``cpu`` or ``cuda`` for ``--torch-device`` ``choice`` (one of :data:`TORCH_DEVICES`): ``auto`` follows
    JAX (cuda when JAX runs on a GPU and torch sees one); ``cuda`` without a CUDA device torch can use is a
    ConfigError, not a traceback later."""
    torch, _ = import_torch()
    has_cuda = torch.cuda.is_available()
    if choice == "auto":
        return "cuda" if jax_backend == "gpu" and has_cuda else "cpu"
    if choice == "cuda" and not has_cuda:
        why = (f"built for CUDA {torch.version.cuda}, it sees no GPU here" if torch.version.cuda
               else "a CPU-only build")
        raise ConfigError(f"--torch-device cuda: torch {torch.__version__} cannot use CUDA ({why}); "
                          "use --torch-device cpu or auto")
    return choice


def precision_settings() -> dict[str, Any]:
    """torch's float32 math switches on CUDA (TF32 in matmuls and in cuDNN convolutions): they decide what a
    float32 GPU comparison compares, so every GPU result records them."""
    torch, _ = import_torch()
    return {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }


def build_torchvision(builder: str, num_classes: int):
    """A freshly initialised torchvision classifier, configured like the project's Flax twin."""
    _, torchvision = import_torch()
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if builder == "googlenet":  # the project's GoogLeNet trains without aux heads (build_model default)
        kwargs.update(aux_logits=False, init_weights=True, transform_input=False)
    return getattr(torchvision.models, builder)(**kwargs)


class TorchWorkload:
    """A torchvision model's train and inference steps on the benchmark batch, on ``device`` in ``dtype``.

    ``threads``: torch's CPU thread count, set before every call (None: left as it is, as on a GPU).
    """

    framework = "torch"

    def __init__(self, builder: str, image_size: int, batch: SyntheticBatch, *, threads: int | None,
                 dtype: str = "float32", device: str = "cpu", num_classes: int = 2, lr: float = 1e-3,
                 seed: int = 0):
        torch, _ = import_torch()
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"torch workload: dtype must be float32 or bfloat16, got {dtype!r}")
        self.torch = torch
        self.threads = threads
        self.dtype = dtype
        self.device = torch.device(device)
        self.device_name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        self._set_threads()
        if self.device.type == "cuda":
            # XLA autotunes its GPU convolutions; cuDNN's autotuner is torch's counterpart (fixed shapes here)
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(seed)
        self.image_size = image_size
        self.model = build_torchvision(builder, num_classes).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        images = torch.from_numpy(batch.images_nhwc).permute(0, 3, 1, 2).contiguous()  # (B, 1, H, W) uint8
        self.images = images.to(self.device)
        self.labels = torch.from_numpy(batch.labels).to(self.device)
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1).to(self.device)
        self.std = torch.tensor(STD).view(1, 3, 1, 1).to(self.device)
        self.warmup_seconds: list[float] = []

    def _set_threads(self) -> None:
        """torch's thread count for this workload (several workloads with different counts share a process)."""
        if self.threads is not None:
            self.torch.set_num_threads(self.threads)

    def _compute_dtype(self):
        """Mixed precision for forward and loss in bfloat16 (float32 parameters), else nothing."""
        if self.dtype == "bfloat16":
            return self.torch.autocast(device_type=self.device.type, dtype=self.torch.bfloat16)
        return contextlib.nullcontext()

    def _preprocess(self, images):
        torch = self.torch
        x = images.to(torch.float32) / 255.0
        x = torch.nn.functional.interpolate(
            x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=False
        )
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def warm_up(self, train_steps: int = 2) -> list[float]:
        """First calls (allocator and oneDNN primitive caches warm up); their seconds are kept."""
        return warm_up(self, train_steps)

    def train(self, steps: int) -> None:
        """``steps`` SGD steps on the batch."""
        F = self.torch.nn.functional
        self._set_threads()
        self.model.train()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            x = self._preprocess(self.images)  # float32, as in the JAX step
            with self._compute_dtype():
                loss = F.cross_entropy(self.model(x), self.labels)
            loss.backward()
            self.optimizer.step()
            float(loss.detach())  # the JAX loop fetches its metrics too (and on a GPU this waits for it)

    def infer(self, steps: int) -> None:
        """``steps`` inference steps (softmax probabilities) on the batch."""
        self._set_threads()
        self.model.eval()
        with self.torch.inference_mode():
            for _ in range(steps):
                x = self._preprocess(self.images)
                with self._compute_dtype():
                    probs = self.torch.softmax(self.model(x), dim=-1)
        float(probs[0, 0])  # waits for the GPU too
