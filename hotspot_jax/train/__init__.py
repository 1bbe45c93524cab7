"""Training: state, data-parallel step, loop, checkpoints."""
