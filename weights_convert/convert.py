"""Strict torchvision state_dict -> Flax variables conversion, with optional head replacement.

Like big_vision's ``merge_params``: every torch tensor is used once, every Flax leaf of
``jax.eval_shape(model.init, ...)`` is filled once with the right shape, and anything else raises
one :class:`ConfigError` that lists the missing, unexpected and mis-shaped entries.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import architectures
from hotspot_jax.errors import ConfigError
from weights_convert import rules
from weights_convert.state_dict import load_state_dict

# a class count no real head has: head leaves whose shape holds it are the class-dependent ones
_SENTINEL_CLASSES = 9973
_LIST_LIMIT = 12  # entries shown per category in an error message


@dataclasses.dataclass(frozen=True)
class ConversionInfo:
    """What :func:`convert_with_info` did, for checkpoint metadata and log lines."""

    arch: str
    num_classes: int
    source_num_classes: int | None  # classes of the checkpoint's head (None: no head in it)
    head_replaced: bool
    input_size: int
    num_tensors: int  # torch tensors converted


def variable_shapes(arch: str, num_classes: int, input_size: int, **options: Any) -> dict[rules.Path, Any]:
    """Flat ``{(collection, ..., leaf): ShapeDtypeStruct}`` of the model's params and batch_stats.

    Initialised in train mode so that train-only submodules (GoogLeNet's aux heads) are included.
    """
    model = architectures.create(arch, num_classes=num_classes, **options)
    key = jax.random.PRNGKey(0)
    x = jnp.zeros((2, input_size, input_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, x, train=True))
    flat = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(dict(shapes.get(collection, {}))).items():
            flat[(collection, *path)] = leaf
    return flat


_HEAD_INIT_CACHE: dict[tuple, Any] = {}


def _head_initialiser(arch: str, num_classes: int, input_size: int, **options: Any):
    """A jitted ``rng -> head params``, compiled once per model configuration."""
    try:
        key = (arch, num_classes, input_size, tuple(sorted(options.items())))
        hash(key)
    except TypeError:  # unhashable option values: no caching
        key = None
    if key is not None and key in _HEAD_INIT_CACHE:
        return _HEAD_INIT_CACHE[key]
    spec = architectures.get(arch)
    model = architectures.create(arch, num_classes=num_classes, **options)
    x = jnp.zeros((2, input_size, input_size, 3), jnp.float32)

    @jax.jit
    def head_only(rng):  # jit lets XLA drop everything but the head's initialisers
        params_rng, dropout_rng = jax.random.split(rng)
        params = model.init({"params": params_rng, "dropout": dropout_rng}, x, train=True)["params"]
        return {k: v for k, v in params.items() if k in spec.classifier}

    if key is not None:
        _HEAD_INIT_CACHE[key] = head_only
    return head_only


def init_head(arch: str, num_classes: int, input_size: int, rng: jax.Array, **options: Any) -> dict[rules.Path, Any]:
    """Freshly initialised classifier params (the module's own initialisers), flat by path."""
    params = _head_initialiser(arch, num_classes, input_size, **options)(rng)
    return {("params", *path): leaf for path, leaf in traverse_util.flatten_dict(dict(params)).items()}


def _is_head(path: rules.Path, classifier: tuple[str, ...]) -> bool:
    return path[0] == "params" and len(path) > 1 and path[1] in classifier


def _torch_name(path: rules.Path) -> str:
    """The torch key the generic rule maps to ``path`` (for messages about missing entries)."""
    collection, *modules, leaf = path
    leaf = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}.get(leaf, leaf)
    return re.sub(r"_(\d+)(?=(?:_\d+)*(?:/|$))", r".\1", "/".join(modules)).replace("/", ".") + "." + leaf


def _listing(items: list[str]) -> str:
    shown = "; ".join(items[:_LIST_LIMIT])
    return shown + (f"; ... and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else "")


def _param_count_hint(state: dict[str, np.ndarray]) -> str:
    """Name the registered architectures whose torchvision parameter count equals the checkpoint's."""
    count = sum(v.size for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    matches = [n for n in architectures.names() if architectures.get(n).num_params == count]
    if matches:
        return f" Its {count:,} parameters match {', '.join(matches)}: is it a checkpoint of another architecture?"
    return f" It has {count:,} parameters."


def convert_with_info(
    arch: str,
    source: Any,
    *,
    num_classes: int | None = None,
    rng: jax.Array | None = None,
    input_size: int | None = None,
    **arch_options: Any,
) -> tuple[dict[str, Any], ConversionInfo]:
    """:func:`convert` plus a :class:`ConversionInfo` describing what was done."""
    spec = architectures.get(arch)
    size = int(input_size or spec.input_size)
    if num_classes is not None and (not isinstance(num_classes, (int, np.integer)) or num_classes < 1):
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    state = load_state_dict(source)
    origin = str(source) if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") else "the state_dict"
    override = rules.override_for(spec.name)

    mapped: dict[rules.Path, tuple[str, np.ndarray]] = {}
    duplicates, optional = [], set()
    for key, value in state.items():
        if key.endswith(rules.DROPPED_SUFFIXES):
            continue
        path = rules.flax_path(key, value.ndim, override)
        if path in mapped:
            duplicates.append(f"{mapped[path][0]!r} and {key!r} -> {rules.path_str(path)}")
            continue
        mapped[path] = (key, rules.flax_layout(key, value, override))
        if rules.is_optional(key, override):
            optional.add(path)

    # the checkpoint's class count, read off the head leaves whose shape depends on num_classes
    probe = variable_shapes(spec.name, _SENTINEL_CLASSES, size, **arch_options)
    source_classes = None
    for path, leaf in probe.items():
        if _is_head(path, spec.classifier) and leaf.shape and leaf.shape[-1] == _SENTINEL_CLASSES and path in mapped:
            source_classes = int(mapped[path][1].shape[-1])
            break
    if num_classes is None:
        if source_classes is None:
            raise ConfigError(
                f"{origin} has no classifier ({', '.join(spec.classifier)}) for {spec.name}; pass num_classes "
                "to initialise a new head." + _param_count_hint(state)
            )
        num_classes = source_classes
    num_classes = int(num_classes)
    template = variable_shapes(spec.name, num_classes, size, **arch_options)
    # a head is replaced only for another class count (or when the checkpoint has none); else it is strict
    head_replaced = source_classes != num_classes

    expected = {p: s for p, s in template.items() if not (head_replaced and _is_head(p, spec.classifier))}
    missing = [p for p in expected if p not in mapped]
    misshaped = [p for p in expected if p in mapped and mapped[p][1].shape != tuple(expected[p].shape)]
    unexpected = [
        p for p in mapped
        if p not in expected and not (head_replaced and _is_head(p, spec.classifier)) and p not in optional
    ]
    if missing or misshaped or unexpected or duplicates:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: " + _listing(
                [f"{_torch_name(p)!r} (-> {rules.path_str(p)} {tuple(expected[p].shape)})" for p in missing]))
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: " + _listing(
                [f"{mapped[p][0]!r} {tuple(state[mapped[p][0]].shape)}" for p in unexpected]))
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped: " + _listing([
                f"{mapped[p][0]!r} {tuple(state[mapped[p][0]].shape)} -> {rules.path_str(p)} is "
                f"{mapped[p][1].shape}, expected {tuple(expected[p].shape)}" for p in misshaped]))
        if duplicates:
            parts.append(f"{len(duplicates)} mapped twice: " + _listing(duplicates))
        options = "".join(f", {k}={v!r}" for k, v in arch_options.items())
        bad = len(missing) + len(misshaped) + len(unexpected)
        hint = _param_count_hint(state) if bad > len(expected) // 4 else ""
        raise ConfigError(
            f"{origin} does not fit {spec.name} (num_classes={num_classes}{options}):"
            + (hint + " Details:" if hint else "") + " " + " | ".join(parts) + "."
        )

    flat = {p: jnp.asarray(mapped[p][1], dtype=expected[p].dtype) for p in expected}
    if head_replaced:
        rng = jax.random.PRNGKey(0) if rng is None else rng
        flat.update(init_head(spec.name, num_classes, size, rng, **arch_options))
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for collection in variables:
        sub = {p[1:]: v for p, v in flat.items() if p[0] == collection}
        variables[collection] = traverse_util.unflatten_dict(sub) if sub else {}
    info = ConversionInfo(
        arch=spec.name,
        num_classes=num_classes,
        source_num_classes=source_classes,
        head_replaced=head_replaced,
        input_size=size,
        num_tensors=len(expected),
    )
    return variables, info


def convert(
    arch: str,
    source: Any,
    *,
    num_classes: int | None = None,
    rng: jax.Array | None = None,
    input_size: int | None = None,
    **arch_options: Any,
) -> dict[str, Any]:
    """torchvision weights (``.pth`` path, state_dict or ``nn.Module``) as Flax ``{"params", "batch_stats"}``.

    ``num_classes`` other than the checkpoint's replaces the classifier (``ArchSpec.classifier``) with
    a freshly initialised one drawn from ``rng`` (default ``PRNGKey(0)``); everything else is converted.
    ``input_size`` is the square size used to trace the model (default: the architecture's).
    """
    variables, _ = convert_with_info(
        arch, source, num_classes=num_classes, rng=rng, input_size=input_size, **arch_options
    )
    return variables
