"""Pictures of a trial's samples: an image grid, or a scatter of 2-D points beside the data."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from genbench.datasets import Dataset
from genbench.metrics import draw_samples, held_out_condition
from genbench.model import GenerativeModel
from genbench.results import atomic_write_bytes


def save_samples(model: GenerativeModel, dataset: Dataset, path: Path, seed: int) -> None:
    """A sample grid (images) or scatter plot (2-D points) for a reader to look at."""
    with torch.no_grad():
        model.eval()
        g = torch.Generator().manual_seed(seed)
        if dataset.spec.kind == "image":
            from torchvision.utils import save_image

            cond = held_out_condition(type(model), dataset, 64, splits=("test",))
            x = draw_samples(model, 64, g, cond, model.device).clamp(0, 1)
            buf = io.BytesIO()
            save_image(x, buf, format="png", nrow=8, padding=1)
            atomic_write_bytes(path, buf.getvalue())
        else:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            x = model.sample(2000, generator=g).float().cpu()
            real = dataset.split("test")["x"].cpu()
            fig, ax = plt.subplots(figsize=(4, 4), dpi=80)
            ax.scatter(real[:, 0], real[:, 1], s=2, c="lightgray", label="data")
            ax.scatter(x[:, 0], x[:, 1], s=2, c="tab:blue", label="model")
            lim = float(real.abs().max()) * 1.3
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_title(f"{model.name} on {dataset.name}")
            ax.legend(loc="upper right", markerscale=4, fontsize=7)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            plt.close(fig)
            atomic_write_bytes(path, buf.getvalue())
        model.train()
