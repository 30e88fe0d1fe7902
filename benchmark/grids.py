"""Pictures of a trial's samples, drawn so a reader can judge them.

* Images are upscaled by whole pixel blocks (nearest neighbour, no smoothing) to at least
  ``MIN_SIDE`` pixels a side, so 8x8 digits are legible and no pixel is invented.
* A family that draws from an input shows input -> output panels: the caption beside the image for
  a caption-conditioned family, the key patches beside the completed image for a patch family, the
  source image beside its translations for a translation family.  Other families get a grid.
* 2-D points are two scatter panels on the same axes, data | model, so neither hides the other.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from genbench.datasets import Dataset
from genbench.metrics import draw_samples, held_out_condition
from genbench.model import Capability, GenerativeModel
from genbench.results import atomic_write_bytes
from genbench.toolkit.translation import DOMAIN_KEY

MIN_SIDE = 32  # pixels a side of each upscaled image
GRID = 64  # images in a plain grid (8 x 8)
PAIRS = GRID  # input -> output panels of a conditional family: as many as a grid has images
PAIR_COLUMNS = 4
PER_DOMAIN = 4  # source images per domain of a translation family
BACKGROUND = (255, 255, 255)
GAP = 4  # pixels between panels


def upscale(x: torch.Tensor, min_side: int = MIN_SIDE) -> torch.Tensor:
    """(..., H, W) -> the same with each pixel repeated f times in both directions, f the least
    whole factor that makes the shorter side at least ``min_side`` (1 for images already that big)."""
    factor = max(1, math.ceil(min_side / min(x.shape[-2:])))
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def to_pil(x: torch.Tensor):
    """One image (C, H, W) in [0, 1] as a PIL RGB image."""
    from PIL import Image

    x = x.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    arr = (x[:3] * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(arr, "RGB")


def grid_image(x: torch.Tensor, nrow: int = 8):
    """Images (N, C, H, W) upscaled by pixel blocks, in a grid with a one-pixel grey border."""
    from torchvision.utils import make_grid

    return to_pil(make_grid(upscale(x.float().cpu().clamp(0, 1)), nrow=nrow, padding=1, pad_value=0.5))


def text_width(text: str) -> int:
    """Pixels the default font needs for ``text``."""
    from PIL import Image, ImageDraw

    return math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text))


def text_image(text: str, width: int, height: int):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((2, max(0, height // 2 - 6)), text, fill=(0, 0, 0))
    return img


def row_image(parts: list, arrow_at: int = 1):
    """PIL images side by side, an arrow before part ``arrow_at``, top-aligned on white."""
    from PIL import Image

    arrow = text_image("->", 18, max(p.height for p in parts))
    parts = [*parts[:arrow_at], arrow, *parts[arrow_at:]]
    out = Image.new("RGB", (sum(p.width for p in parts) + GAP * (len(parts) - 1), max(p.height for p in parts)),
                    BACKGROUND)
    x = 0
    for p in parts:
        out.paste(p, (x, 0))
        x += p.width + GAP
    return out


def stack_image(rows: list, columns: int = 1, title: str = ""):
    """Panels stacked in ``columns`` columns, with a title line on top."""
    from PIL import Image

    per_col = math.ceil(len(rows) / columns)
    cols = [rows[i * per_col:(i + 1) * per_col] for i in range(columns)]
    widths = [max((r.width for r in c), default=0) for c in cols]
    heights = [sum(r.height for r in c) + GAP * max(0, len(c) - 1) for c in cols]
    top = 16 if title else 0
    out = Image.new("RGB", (max(sum(widths) + 3 * GAP * (columns - 1) + 2 * GAP, text_width(title) + 8),
                            max(heights) + top + 2 * GAP), BACKGROUND)
    if title:
        out.paste(text_image(title, out.width, top), (0, 0))
    x = GAP
    for col, width in zip(cols, widths):
        y = top + GAP
        for r in col:
            out.paste(r, (x, y))
            y += r.height + GAP
        x += width + 3 * GAP
    return out


def caption_strings(condition, dataset: Dataset, key: str) -> list[str]:
    """Captions as text: strings as given, word ids through the vocabulary the dataset names
    (``DataSpec.extras[key]["vocab"]``, id 0 the padding)."""
    if isinstance(condition, list | tuple):
        return [str(c) for c in condition]
    vocab = (dataset.spec.extras.get(key) or {}).get("vocab")
    rows = condition.cpu().tolist()
    if not vocab:
        return [" ".join(map(str, r)) for r in rows]
    return [" ".join(vocab[i] for i in r if 0 < i < len(vocab)) for r in rows]


def condition_panels(model: GenerativeModel, dataset: Dataset, g: torch.Generator):
    """Input -> output panels of a family that samples from an input (``condition_key``)."""
    key = type(model).condition_key
    cond = held_out_condition(type(model), dataset, PAIRS, splits=("test",))
    out = draw_samples(model, PAIRS, g, cond, model.device).float().cpu().clamp(0, 1)
    outputs = [to_pil(upscale(o)) for o in out]
    side = outputs[0].height
    if isinstance(cond, torch.Tensor) and cond.dim() == 5 and cond.is_floating_point():
        # key patches (n, K, C, s, s): the patches in a row, upscaled by the same whole factor
        factor = outputs[0].height // out.shape[-2]
        inputs = [to_pil(torch.cat([torch.nn.functional.pad(p, (0, 1, 0, 1), value=0.5) for p in c], dim=-1)
                         .repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)) for c in cond.cpu()]
        what = "key patches"
    else:
        texts = caption_strings(cond, dataset, key)
        width = max(text_width(t) for t in texts) + 8
        inputs = [text_image(t, width, side) for t in texts]
        what = key
    rows = [row_image([i, o]) for i, o in zip(inputs, outputs)]
    return stack_image(rows, columns=PAIR_COLUMNS, title=f"{model.name}: {what} -> sample (the first test inputs)")


def translation_panels(model: GenerativeModel, dataset: Dataset):
    """Source image -> its translation into every other domain, a few test images per domain."""
    names = list((dataset.spec.extras.get(DOMAIN_KEY) or {}).get("names") or [])
    test = dataset.split("test")
    if len(names) < 2 or DOMAIN_KEY not in test:
        return None
    x, dom = test["x"], test[DOMAIN_KEY].cpu()
    rows = []
    for s in range(len(names)):
        picked = (dom == s).nonzero().flatten()[:PER_DOMAIN]
        if len(picked) == 0:
            continue
        src = x[picked.to(x.device)].to(model.device)
        outs = [model.translate(src, s, t).float().cpu().clamp(0, 1) for t in range(len(names)) if t != s]
        for j in range(len(picked)):
            rows.append(row_image([to_pil(upscale(src[j].cpu())), *[to_pil(upscale(o[j])) for o in outs]]))
    if not rows:
        return None
    pairs = "; ".join(f"{s} -> {', '.join(t for t in names if t != s)}" for s in names)
    return stack_image(rows, columns=2, title=f"{model.name}: source -> translations ({pairs})")


def scatter_figure(model_points: torch.Tensor, real: torch.Tensor, title: str):
    """Data | model, two panels on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(7, 3.6), dpi=80, sharex=True, sharey=True)
    lim = float(real.abs().max()) * 1.3  # the data's frame: a model that spreads its mass wide is not zoomed out
    outside = int((model_points.abs().max(dim=1).values > lim).sum())
    if outside:
        title += f" ({outside} of {len(model_points)} samples outside the axes)"
    for ax, pts, name, color in ((axes[0], real, "data (test split)", "dimgray"),
                                 (axes[1], model_points, "model samples", "tab:blue")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, c=color)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="png")
    return buf.getvalue()


def sample_picture(model: GenerativeModel, dataset: Dataset, seed: int) -> bytes:
    """The PNG bytes of :func:`save_samples`."""
    g = torch.Generator().manual_seed(seed)
    if dataset.spec.kind == "image":
        if type(model).condition_key is not None:
            return png_bytes(condition_panels(model, dataset, g))
        if Capability.TRANSLATE in type(model).capabilities:
            panels = translation_panels(model, dataset)
            if panels is not None:
                return png_bytes(panels)
        x = draw_samples(model, GRID, g, None, model.device)
        return png_bytes(grid_image(x))
    x = model.sample(2000, generator=g).float().cpu()
    real = dataset.split("test")["x"].float().cpu()
    return scatter_figure(x, real, f"{model.name} on {dataset.name}")


def save_samples(model: GenerativeModel, dataset: Dataset, path: Path, seed: int) -> None:
    """A picture for a reader to look at (see the module docstring), written atomically."""
    with torch.no_grad():
        model.eval()
        try:
            data = sample_picture(model, dataset, seed)
        finally:
            model.train()
    atomic_write_bytes(path, data)
