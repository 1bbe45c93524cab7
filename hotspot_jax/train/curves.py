"""Training curves: loss and accuracy per epoch (train and validation), the chosen epoch marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hotspot_jax.train.files import write_atomic


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Write a two-panel PNG (loss, accuracy) of ``history`` (metrics.jsonl rows) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    best = [r["epoch"] for r in history if r.get("best")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in ((axes[0], "loss", "cross-entropy loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [r[f"train_{key}"] for r in history], "o-", ms=3, label="train")
        ax.plot(epochs, [r[f"val_{key}"] for r in history], "s-", ms=3, label="validation")
        if best:
            ax.axvline(best[-1], color="gray", ls="--", lw=1, label=f"chosen (epoch {best[-1]})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("training curves")
    write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
