"""The torchvision twin of :mod:`hotspot_jax.bench.jax_steps`: same model, optimiser, batch and input work.

Each step does what the JAX step does: uint8 -> [0, 1], bilinear resize (``align_corners=False``, no
antialias, like ``jax.image.resize``), grey -> RGB, ImageNet normalisation, forward; training adds
cross-entropy, backward and an SGD step (momentum 0.9, weight decay 1e-4, as ``sgd_momentum``);
inference runs under ``torch.inference_mode`` and ends with the softmax, as the JAX eval step does.
Tensors are NCHW (torchvision's default layout, the one its users get).
"""

from __future__ import annotations

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


def build_torchvision(builder: str, num_classes: int):
    """A freshly initialised torchvision classifier, configured like the project's Flax twin."""
    _, torchvision = import_torch()
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if builder == "googlenet":  # the project's GoogLeNet trains without aux heads (build_model default)
        kwargs.update(aux_logits=False, init_weights=True, transform_input=False)
    return getattr(torchvision.models, builder)(**kwargs)


class TorchWorkload:
    """A torchvision model's train and inference steps on the benchmark batch, with ``threads`` threads."""

    framework = "torch"

    def __init__(self, builder: str, image_size: int, batch: SyntheticBatch, *, threads: int,
                 num_classes: int = 2, lr: float = 1e-3, seed: int = 0):
        torch, _ = import_torch()
        self.torch = torch
        self.threads = threads
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.image_size = image_size
        self.model = build_torchvision(builder, num_classes)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        self.images = torch.from_numpy(batch.images_nhwc).permute(0, 3, 1, 2).contiguous()  # (B, 1, H, W) uint8
        self.labels = torch.from_numpy(batch.labels)
        self.mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(STD).view(1, 3, 1, 1)
        self.warmup_seconds: list[float] = []

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
        self.torch.set_num_threads(self.threads)  # several workloads with different counts share a process
        self.model.train()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(self.model(self._preprocess(self.images)), self.labels)
            loss.backward()
            self.optimizer.step()
            float(loss.detach())  # the JAX loop fetches its metrics too

    def infer(self, steps: int) -> None:
        """``steps`` inference steps (softmax probabilities) on the batch."""
        self.torch.set_num_threads(self.threads)
        self.model.eval()
        with self.torch.inference_mode():
            for _ in range(steps):
                probs = self.torch.softmax(self.model(self._preprocess(self.images)), dim=-1)
        float(probs[0, 0])
