"""A tiny CNN honouring the architecture contract (registered as ``tiny_cnn_test``) for fast training
tests, plus unit tests of the host-side batching and of the checkpoint rule."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xla_fast_compile import optimizations_off
import architectures
from architectures.ops import layers
from hotspot_jax.errors import ConfigError
from hotspot_jax.train import batching
from hotspot_jax.train.loop import is_better

TINY = "tiny_cnn_test"


class TinyNet(nn.Module):
    """conv(stride 2) -> synced BatchNorm -> ReLU -> global mean -> dropout -> dense; optional aux head."""

    num_classes: int = 1000
    impl: Any = None  # the architecture contract's op implementation (architectures.ops.impl); unused here
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    dropout_rate: float = 0.5
    aux_logits: bool = False

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = nn.Conv(8, (3, 3), strides=(2, 2), padding=layers.torch_padding(1), dtype=self.dtype, name="conv1")(x)
        x = layers.batch_norm(train, axis_name=self.bn_axis_name, dtype=self.dtype, impl=self.impl, name="bn1")(x)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        if self.aux_logits and (train or self.is_initializing()):  # params exist from init, as GoogLeNet's
            aux = nn.Dense(self.num_classes, name="aux_fc")(x).astype(jnp.float32)
            if train:
                self.sow("aux_logits", "aux1", aux)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x).astype(jnp.float32)


if TINY not in architectures.names():
    architectures.register(
        architectures.ArchSpec(
            name=TINY, constructor=TinyNet, input_size=16, min_input_size=4, torchvision_builder="",
            num_params=0, classifier=("fc",), first_conv="conv1", description="test-only tiny CNN",
        )
    )


TINY_NO_DROPOUT = "tiny_cnn_test_nodropout"


class TinyNetNoDropout(TinyNet):
    """TinyNet without dropout: no per-device randomness, so any device count gives the same numbers
    (tests/test_distributed.py compares 2 processes with 1 device)."""

    dropout_rate: float = 0.0


if TINY_NO_DROPOUT not in architectures.names():
    architectures.register(
        architectures.ArchSpec(
            name=TINY_NO_DROPOUT, constructor=TinyNetNoDropout, input_size=16, min_input_size=4,
            torchvision_builder="", num_params=0, classifier=("fc",), first_conv="conv1",
            description="test-only tiny CNN without dropout",
        )
    )


@pytest.fixture
def fast_compile():
    """Compile with most XLA optimisations off (tiny models: compile time dominates); restored afterwards."""
    with optimizations_off():
        yield


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    a = batching.epoch_permutation(3, 5, 100)
    assert np.array_equal(a, batching.epoch_permutation(3, 5, 100))
    assert sorted(a.tolist()) == list(range(100))
    assert not np.array_equal(a, batching.epoch_permutation(3, 6, 100))
    assert not np.array_equal(a, batching.epoch_permutation(4, 5, 100))


def test_train_batches_drop_the_last_partial_batch_but_not_always_the_same_images():
    idx = batching.train_batch_indices(0, 0, 70, 16)
    assert idx.shape == (4, 16) and len(set(idx.ravel().tolist())) == 64
    left_out = [set(range(70)) - set(batching.train_batch_indices(0, e, 70, 16).ravel().tolist()) for e in range(20)]
    assert all(len(s) == 6 for s in left_out)
    assert len(set().union(*left_out)) > 40  # reshuffled every epoch: no image is always left out
    with pytest.raises(ConfigError, match="larger than the training set"):
        batching.train_batch_indices(0, 0, 10, 16)


def test_padded_eval_batches_cover_every_image_once():
    got = list(batching.padded_batches(10, 4))
    assert [v for _, v in got] == [4, 4, 2]
    assert all(len(i) == 4 for i, _ in got)
    assert np.concatenate([i[:v] for i, v in got]).tolist() == list(range(10))


def test_batch_size_must_divide_over_devices():
    batching.check_divisible(32, 2, "--batch-size")
    with pytest.raises(ConfigError, match="not divisible by the number of devices \\(2\\)"):
        batching.check_divisible(33, 2, "--batch-size")
    assert batching.shard(np.arange(12).reshape(6, 2), 3).shape == (3, 2, 2)


def test_checkpoint_rule_accuracy_then_loss_then_earlier_epoch():
    best = {"val_accuracy": 0.8, "val_loss": 0.5}
    assert is_better({"val_accuracy": 0.81, "val_loss": 0.9}, best)
    assert not is_better({"val_accuracy": 0.79, "val_loss": 0.1}, best)
    assert is_better({"val_accuracy": 0.8, "val_loss": 0.4}, best)
    assert not is_better({"val_accuracy": 0.8, "val_loss": 0.5}, best)  # full tie: the earlier epoch stays
    assert is_better({"val_accuracy": 0.0, "val_loss": 9.0}, None)
