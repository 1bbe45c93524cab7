"""The data-parallel training and evaluation steps: ``jax.pmap`` over the local devices (or over every process's
devices in a multi-process run, :mod:`hotspot_jax.train.distributed`; ``axis_index`` is then the global index).

Only uint8 images cross to the devices; preprocessing (resize + ImageNet normalisation) runs inside
the compiled step. Gradients and metrics are averaged over the ``batch`` axis, and models built with
``bn_axis_name="batch"`` normalise over the global batch, so the device count does not change results.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hotspot_jax.train import ema
from hotspot_jax.train.contrastive import contrastive_loss
from hotspot_jax.train.contrastive import two_views as contrastive_views
from hotspot_jax.train.config import TTA_MODES

AXIS = "batch"
AUX_WEIGHT = 0.3  # torchvision's GoogLeNet recipe: loss + 0.3 * (aux1 + aux2)


def _preprocess(images: jax.Array, size: int) -> jax.Array:
    from hotspot_jax.data import preprocess  # imported late: the data package imports heavy readers

    return preprocess(images, size)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def device_mean(tree: Any) -> Any:
    """Mean over the ``pmap`` devices; nothing at all on one device, where XLA:CPU's all-reduce would
    still copy every gradient (docs/performance.md, optimisation log, row 5)."""
    if jax.lax.axis_size(AXIS) == 1:
        return tree
    return jax.lax.pmean(tree, AXIS)


# How the optimiser update is laid out: "device-axis" computes it on arrays with a leading axis of 1,
# the shape pmap gives the state outside the per-device function; "per-device" on the plain arrays.
UPDATE_LAYOUT = "device-axis"


def after_backward(grads: Any) -> Any:
    """``grads`` plus an exact zero computed from every gradient, so the update waits for all of them.

    A layer's input gradient reads its kernel, but the kernel's own gradient does not depend on that
    read, so XLA cannot prove the in-place update comes after it and copies the donated kernel first
    (239 MB a step for AlexNet). Every input-gradient read is an ancestor of some parameter's gradient
    (the first layer's at the latest), so a zero made from all of them orders the update after every
    read. ``where(isfinite(s), s * 0, 0)`` is +0 for any ``s``; adding it leaves every gradient as is.
    """
    leaves = jax.tree_util.tree_leaves(grads)
    if not leaves:
        return grads
    total = sum(leaf.ravel()[0].astype(jnp.float32) for leaf in leaves)
    zero = jnp.where(jnp.isfinite(total), total * 0, 0.0)
    return jax.tree_util.tree_map(lambda g: g + zero.astype(g.dtype), grads)


def apply_optimizer(tx: optax.GradientTransformation, grads: Any, opt_state: Any, params: Any) -> tuple[Any, Any]:
    """``(new params, new optimiser state)``: ``tx.update`` then ``apply_updates``, in place in XLA:CPU.

    On the plain per-device arrays, XLA:CPU fuses the new momentum into both the momentum's and the
    parameters' outputs (each ends in a reshape to pmap's ``(1, ...)``), each fusion reads the other's
    old buffer, and so the donated parameters and momentum are copied every step (456 MB for AlexNet).
    Computed on ``x[None]``, the shape of those buffers, the update is two in-place loops, no copy.
    """
    if UPDATE_LAYOUT == "per-device":
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
    grads = after_backward(grads)
    expand = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)  # noqa: E731
    squeeze = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)  # noqa: E731
    params_1 = expand(params)
    updates, opt_state_1 = tx.update(expand(grads), expand(opt_state), params_1)
    return squeeze(optax.apply_updates(params_1, updates)), squeeze(opt_state_1)


def soft_targets(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
    """One-hot ``labels`` with label smoothing: ``(1 - smoothing)`` on the class, ``smoothing / K`` everywhere."""
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def mixup(x: jax.Array, labels: jax.Array, key: jax.Array, alpha: float) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """mixup (Zhang et al., 2018) inside one device's batch: ``(lam * x + (1 - lam) * x[perm], labels,
    labels[perm], lam)``, ``lam ~ Beta(alpha, alpha)`` once per batch, ``perm`` a random permutation."""
    lam, perm = mixup_draw(key, alpha, x.shape[0], x.dtype)
    return lam * x + (1 - lam) * x[perm], labels, labels[perm], lam


def mixup_draw(key: jax.Array, alpha: float, n: int, dtype: Any) -> tuple[jax.Array, jax.Array]:
    """mixup's ``(lam, perm)`` for ``key``: what :func:`mixup` mixes with (and distillation mixes its targets with)."""
    k_lam, k_perm = jax.random.split(key)
    return jax.random.beta(k_lam, alpha, alpha).astype(dtype), jax.random.permutation(k_perm, n)


def distillation_loss(logits: jax.Array, teacher_probs: jax.Array, temperature: float) -> jax.Array:
    """Per-example ``T^2 * KL(teacher || softmax(logits / T))`` in float32 (Hinton et al., 2015): ``teacher_probs``
    are the teachers' tempered probabilities; ``T^2`` keeps the gradient's scale independent of ``T``. Zero exactly
    when the student's tempered softmax equals the teacher's (tests/test_distill.py)."""
    t = teacher_probs.astype(jnp.float32)
    log_student = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, -1)
    log_teacher = jnp.log(jnp.where(t > 0, t, 1.0))
    return temperature**2 * jnp.sum(jnp.where(t > 0, t * (log_teacher - log_student), 0.0), -1)


def _aux_loss(mutated: dict[str, Any], loss: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Sum of ``loss`` (the main head's: the same targets, mixed or smoothed) over every sown auxiliary head
    (0 when there is none)."""
    heads = jax.tree_util.tree_leaves(mutated.get("aux_logits", {}))
    return sum((loss(h) for h in heads), jnp.zeros((), jnp.float32))


def train_step_fn(
    model: nn.Module, tx: optax.GradientTransformation, image_size: int, aux_weight: float = AUX_WEIGHT,
    augment: Callable | None = None, label_smoothing: float = 0.0, mixup_alpha: float = 0.0, ema_decay: float = 0.0,
    distill_weight: float | None = None, distill_temperature: float = 2.0,
    contrastive_temperature: float | None = None,
) -> Callable:
    """The per-device step ``(state, images_u8, labels, key) -> (state, metrics)``, to be pmapped; with
    ``distill_weight`` (not None: knowledge distillation, hotspot_jax.train.distill) it is
    ``(state, images_u8, labels, teacher_probs, key)`` and the main head's objective is
    ``(1 - A) * hard loss + A * distillation_loss`` (mixup mixes ``teacher_probs`` with the same lam and perm;
    auxiliary heads keep the hard loss). The ``loss`` metric stays the hard loss, ``total_loss`` is the objective.

    Dropout gets ``fold_in(fold_in(key, step), device index)``: a function of (seed, step, device);
    ``augment(images_u8, key)`` (online augmentation, optional) gets that key folded with 1, mixup (on the
    preprocessed batch, ``mixup_alpha > 0``) with 2. With neither mixup nor ``label_smoothing`` the loss is
    the plain integer-label cross-entropy, as in the study. With ``ema_decay > 0`` the state's ``"ema"`` moves
    towards the new variables (hotspot_jax.train.ema); it never feeds back into the update.

    With ``contrastive_temperature`` (not None: a self-supervised run, hotspot_jax.train.contrastive) the labels
    are not read: ``augment`` draws two views of every image (keys folded with 1 and 2 of the augmentation key),
    the loss is NT-Xent over the global batch's views and ``accuracy`` the share of views whose nearest view is
    their partner (no mixup, smoothing or distillation: the configuration refuses them).
    """

    distill = distill_weight is not None
    contrastive = contrastive_temperature is not None
    if contrastive and augment is None:
        raise ValueError("a contrastive step needs an online augmentation to draw its two views")

    def step(state, images, labels, *rest):
        teacher, key = rest if distill else (None, rest[0])
        key = jax.random.fold_in(jax.random.fold_in(key, state["step"]), jax.lax.axis_index(AXIS))
        if contrastive:
            images = contrastive_views(images, jax.random.fold_in(key, 1), augment)
        elif augment is not None:
            images = augment(images, jax.random.fold_in(key, 1))
        x = _preprocess(images, image_size)
        if mixup_alpha > 0:
            x, labels_a, labels_b, lam = mixup(x, labels, jax.random.fold_in(key, 2), mixup_alpha)
            if distill:  # the same draw as mixup's
                _, perm = mixup_draw(jax.random.fold_in(key, 2), mixup_alpha, x.shape[0], x.dtype)
                lam_t = lam.astype(jnp.float32)
                teacher = lam_t * teacher + (1 - lam_t) * teacher[perm]

        def data_loss(logits):
            if contrastive:
                return contrastive_loss(logits, contrastive_temperature, AXIS)[0]
            if not (mixup_alpha > 0 or label_smoothing > 0):
                return jnp.mean(cross_entropy(logits, labels))
            logits = logits.astype(jnp.float32)
            k = logits.shape[-1]
            if mixup_alpha > 0:
                targets = (lam.astype(jnp.float32) * soft_targets(labels_a, k, label_smoothing)
                           + (1 - lam.astype(jnp.float32)) * soft_targets(labels_b, k, label_smoothing))
            else:
                targets = soft_targets(labels, k, label_smoothing)
            return jnp.mean(optax.softmax_cross_entropy(logits, targets))

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state["batch_stats"]}
            logits, mutated = model.apply(
                variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats", "aux_logits"]
            )
            loss = data_loss(logits)
            objective = loss
            if distill:
                soft = jnp.mean(distillation_loss(logits, teacher, distill_temperature))
                objective = (1.0 - distill_weight) * loss + distill_weight * soft
            total = objective + aux_weight * _aux_loss(mutated, data_loss)
            return total, (loss, logits, mutated.get("batch_stats", state["batch_stats"]))

        (total, (loss, logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        grads = device_mean(grads)
        params, opt_state = apply_optimizer(tx, grads, state["opt_state"], state["params"])
        if contrastive:
            accuracy = contrastive_loss(logits, contrastive_temperature, AXIS)[1]
        else:
            accuracy = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
        metrics = device_mean({"loss": loss, "total_loss": total, "accuracy": accuracy})
        new_state = {
            "step": state["step"] + 1,
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
        }
        if ema_decay > 0:
            new_state["ema"] = ema.update(state["ema"], {"params": params, "batch_stats": batch_stats}, ema_decay,
                                          state["step"])
        return new_state, metrics

    return step


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    image_size: int,
    devices: Sequence[jax.Device] | None = None,
    aux_weight: float = AUX_WEIGHT,
    augment: Callable | None = None,
    label_smoothing: float = 0.0,
    mixup_alpha: float = 0.0,
    ema_decay: float = 0.0,
    distill_weight: float | None = None,
    distill_temperature: float = 2.0,
    contrastive_temperature: float | None = None,
) -> Callable:
    """pmapped train step: state replicated (donated), images ``(D, B/D, H, W, 1)`` uint8, labels ``(D, B/D)``
    (and with ``distill_weight`` the teachers' probabilities ``(D, B/D, K)`` after them)."""
    distill = distill_weight is not None
    return jax.pmap(
        train_step_fn(model, tx, image_size, aux_weight, augment, label_smoothing, mixup_alpha, ema_decay,
                      distill_weight, distill_temperature, contrastive_temperature),
        axis_name=AXIS,
        in_axes=(0, 0, 0, 0, None) if distill else (0, 0, 0, None),
        donate_argnums=(0,),
        devices=devices,
    )


def tta_views(images: jax.Array, mode: str) -> list[jax.Array]:
    """The images a prediction averages over: the image alone (``none``), or with its horizontal, vertical
    and both flips (``flips``: the flips training's online augmentation draws)."""
    if mode == "none":
        return [images]
    if mode == "flips":
        return [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]
    raise ValueError(f"unknown test-time augmentation {mode!r}; use one of {', '.join(TTA_MODES)}")


def class_probabilities(model: nn.Module, variables: Any, images: jax.Array, image_size: int,
                        tta: str = "none") -> jax.Array:
    """Softmax probabilities ``(N, K)`` of uint8 ``images``, averaged over the ``tta`` views."""
    views = tta_views(images, tta)
    probs = [jax.nn.softmax(model.apply(variables, _preprocess(v, image_size), train=False).astype(jnp.float32), -1)
             for v in views]
    return sum(probs[1:], probs[0]) / len(probs)


def eval_step_fn(model: nn.Module, image_size: int, tta: str = "none") -> Callable:
    """Per-device ``(state, images_u8, labels) -> (class probabilities (B, K), loss, correct)`` per example;
    with ``tta`` the probabilities are averaged over the views of :func:`tta_views` (loss and correct from them).
    ``state``: a training state (its weight average when it has one: ema.evaluated_variables) or variables."""

    def step(state, images, labels):
        variables = ema.evaluated_variables(state)
        if tta != "none":
            probs = class_probabilities(model, variables, images, image_size, tta)
            picked = jnp.take_along_axis(probs, labels[:, None].astype(jnp.int32), -1)[:, 0]
            loss = -jnp.log(jnp.maximum(picked, jnp.finfo(jnp.float32).tiny))
            return probs, loss, (jnp.argmax(probs, -1) == labels).astype(jnp.float32)
        x = _preprocess(images, image_size)
        logits = model.apply(variables, x, train=False)
        logits = logits.astype(jnp.float32)
        correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
        return jax.nn.softmax(logits, -1), cross_entropy(logits, labels), correct

    return step


def make_eval_step(
    model: nn.Module, image_size: int, devices: Sequence[jax.Device] | None = None, tta: str = "none"
) -> Callable:
    """pmapped evaluation step over a replicated state (not donated)."""
    return jax.pmap(eval_step_fn(model, image_size, tta), axis_name=AXIS, devices=devices)
