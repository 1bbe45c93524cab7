"""Throughput benchmark of the project's JAX steps against torchvision + PyTorch on the same machine.

``scripts/benchmark.py`` is the entry point; :mod:`hotspot_jax.bench.ab` runs interleaved A/B
comparisons of XLA flags or step variants in separate worker processes (see docs/performance.md).
"""

DEFAULT_ARCHS = ("alexnet", "googlenet", "shufflenet_v2_x1_0", "squeezenet1_1", "resnet50", "mobilenet_v2")
