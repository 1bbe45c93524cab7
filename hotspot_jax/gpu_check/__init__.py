"""The one-shot GPU check: one command that a fresh GPU machine with only this repository runs in minutes.

It runs, each in its own process, with a time limit, and writes everything under one output folder:
the environment (versions, devices), the study's full SqueezeNet 1.1 run (227 px, 40 epochs), the torch
parity tests with JAX on the GPU, the depthwise convolution's two forms timed against each other, and the
JAX-vs-PyTorch benchmark on the same GPU in float32 and bfloat16. ``scripts/gpu_check.sh`` installs and
calls it; ``--tiny`` runs every stage at a toy size (tests/test_gpu_check.py runs that on the CPU).
"""
