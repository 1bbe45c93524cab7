"""A Ctrl-C at a chosen point of a training run, for the exact-resume tests (test_ema, test_distill)."""

from __future__ import annotations


def interrupt_after_reads(n: int):
    """An ``InterruptFlag`` for ``hotspot_jax.train.loop`` whose ``requested`` turns true at its ``n``-th read (the
    loop reads it once per step and once at each epoch end: with 4 steps an epoch, 7 reads is after the second
    step of epoch 2); patch it in with ``monkeypatch.setattr(loop, "InterruptFlag", ...)``."""
    from hotspot_jax.train import loop

    class StopAfterReads(loop.InterruptFlag):
        reads = 0

        @property
        def requested(self):
            StopAfterReads.reads += 1
            return StopAfterReads.reads >= n

        @requested.setter
        def requested(self, value):
            pass

    return StopAfterReads
