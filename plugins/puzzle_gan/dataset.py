"""The key-patch task sets (``digits-patches``, ``mnist-patches``): each image's key patches, where
they sit, and the mask of their windows.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from genbench.datasets import (
    DIGITS_SPEC,
    MNIST_SPEC,
    Dataset,
    derived_dataset,
    load_digits,
    load_mnist,
)
from genbench.errors import DatasetError
from genbench.model import DataSpec

PATCHES_KEY = "patches"
PATCHES = "patches"  # the capability: completes whole images from key patches (needed by KeyPatchMetrics)
MASK_KEY = "patch_mask"
POS_KEY = "patch_pos"
N_PATCHES = 3
DEFAULT_SEED = 0
INK_FLOOR = 0.05  # added to each window's mean ink, so empty windows stay possible

# --- the dataset ---------------------------------------------------------------------------------


def patch_side(spec: DataSpec) -> int:
    return max(2, round(3 * min(spec.shape[-2:]) / 8))


def choose_windows(x: torch.Tensor, k: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """Top-left (row, col) of ``k`` windows per image, drawn in proportion to ink + INK_FLOOR; a
    window that would share two or more rows and two or more columns with an earlier one is
    excluded while any other remains."""
    n, _, h, w = x.shape
    ink = F.avg_pool2d(x.mean(1, keepdim=True), side, stride=1).flatten(1) + INK_FLOOR  # (n, P)
    cols = w - side + 1
    rows_of = torch.arange(ink.shape[1]) // cols
    cols_of = torch.arange(ink.shape[1]) % cols
    allowed = torch.ones_like(ink, dtype=torch.bool)
    out = torch.empty(n, k, 2, dtype=torch.long)
    for j in range(k):
        weights = torch.where(allowed, ink, torch.zeros_like(ink))
        empty = weights.sum(1) == 0
        weights[empty] = ink[empty]
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        r, c = rows_of[pick], cols_of[pick]
        out[:, j, 0], out[:, j, 1] = r, c
        near = ((rows_of[None] - r[:, None]).abs() < side - 1) & ((cols_of[None] - c[:, None]).abs() < side - 1)
        allowed &= ~near
    return out


def cut_patches(x: torch.Tensor, pos: torch.Tensor, side: int) -> torch.Tensor:
    """The windows of ``x`` (N, C, H, W) at ``pos`` (N, K, 2) as (N, K, C, side, side)."""
    n, k = pos.shape[:2]
    offs = torch.arange(side, device=x.device)
    rows = (pos[..., 0:1].to(x.device) + offs)  # (N, K, s)
    cols = (pos[..., 1:2].to(x.device) + offs)
    idx_n = torch.arange(n, device=x.device)[:, None, None, None]
    patches = x[idx_n, :, rows[:, :, :, None], cols[:, :, None, :]]  # (N, K, s, s, C)
    return patches.permute(0, 1, 4, 2, 3).contiguous()


def windows_mask(pos: torch.Tensor, side: int, shape: tuple[int, int]) -> torch.Tensor:
    """1 on the union of the windows at ``pos`` (N, K, 2), shape (N, 1, H, W)."""
    h, w = shape
    r = torch.arange(h)[None, None, :]
    c = torch.arange(w)[None, None, :]
    in_r = (r >= pos[..., 0:1]) & (r < pos[..., 0:1] + side)  # (N, K, H)
    in_c = (c >= pos[..., 1:2]) & (c < pos[..., 1:2] + side)
    return (in_r[..., :, None] & in_c[..., None, :]).any(1, keepdim=True).float()


def patch_spec(base: DataSpec, name: str) -> DataSpec:
    side = patch_side(base)
    extras = {PATCHES_KEY: {"count": N_PATCHES, "side": side}, MASK_KEY: {}, POS_KEY: {}}
    return dataclasses.replace(base, name=name, extras=extras)


def make_patch_dataset(base: Dataset, spec: DataSpec, seed: int = DEFAULT_SEED) -> Dataset:
    """Key patches of every image of ``base`` (module docstring); deterministic for a base and seed."""
    if base.spec.kind != "image":
        raise DatasetError(f"{spec.name}: key patches are cut from images; base {base.name!r} holds {base.spec.kind}")
    side, k = spec.extras[PATCHES_KEY]["side"], spec.extras[PATCHES_KEY]["count"]
    g = torch.Generator().manual_seed(seed)

    def build_split(split, x, y):
        pos = choose_windows(x, k, side, g)
        return {"x": x.clone(), "y": y.clone(), PATCHES_KEY: cut_patches(x, pos, side),
                MASK_KEY: windows_mask(pos, side, x.shape[-2:]), POS_KEY: pos}

    return derived_dataset(base, spec, build_split, f"{base.name} with {k} key patches of {side}x{side} per image, "
                           f"drawn by ink (seed {seed})", seed=seed)


DIGITS_PATCHES_SPEC = patch_spec(DIGITS_SPEC, "digits-patches")
MNIST_PATCHES_SPEC = patch_spec(MNIST_SPEC, "mnist-patches")


def load_digits_patches() -> Dataset:
    return make_patch_dataset(load_digits(), DIGITS_PATCHES_SPEC)


def load_mnist_patches(root=None, download=None, limit=None) -> Dataset:
    return make_patch_dataset(load_mnist(root, download, limit), MNIST_PATCHES_SPEC)


