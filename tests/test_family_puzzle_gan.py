"""Key-patch GAN: the mask it predicts is supervised at the patches' true windows, and the metric
reads that mask the way the model writes it (a value in [0, 1], 1 where a patch belongs)."""

from __future__ import annotations

import torch

from genbench_plugins.puzzle_gan import (
    MASK_KEY,
    PATCHES_KEY,
    POS_KEY,
    PuzzleGAN,
    PuzzleGANConfig,
    best_constant_mask,
    best_threshold,
    cut_patches,
    load_digits_patches,
    mask_iou,
)


def small_model(spec, **overrides) -> PuzzleGAN:
    torch.manual_seed(0)
    return PuzzleGAN(PuzzleGANConfig(code_dim=32, width=16, **overrides), spec)


def test_true_mask_covers_every_patch_window_and_scores_one():
    data = load_digits_patches().split("test")
    mask, pos = data[MASK_KEY], data[POS_KEY]
    # every pixel of every key patch's window is inside the true mask, and nothing else is
    inside = cut_patches(mask, pos, 3)
    assert bool((inside == 1).all())
    assert int(mask.sum()) <= 3 * 9 * len(mask)
    assert float(mask_iou(mask, mask).min()) == 1.0
    # a constant mask cannot do as well as the truth
    chance = float(mask_iou(best_constant_mask(mask), mask).mean())
    assert chance < 0.9


def test_mask_head_is_a_probability_map_on_the_data_grid():
    ds = load_digits_patches()
    model = small_model(ds.spec).eval()
    with torch.no_grad():
        img, mask = model.complete(ds.split("test")[PATCHES_KEY][:8], torch.Generator().manual_seed(0))
    assert mask.shape == (8, 1, 8, 8) and img.shape == (8, 1, 8, 8)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0


def test_mask_learns_where_the_patches_of_a_fixed_batch_belong():
    """A few steps on one batch: the predicted mask, thresholded as the metric thresholds it, must
    beat the best constant mask of that batch -- it would not if the target were misplaced (e.g.
    transposed or shifted) relative to the patches."""
    ds = load_digits_patches()
    batch = {k: v[:32] for k, v in ds.split("train").items()}
    target = batch[MASK_KEY]
    model = small_model(ds.spec)
    model.train()
    for step in range(120):
        model.train_step(batch, step / 120)
    model.eval()
    with torch.no_grad():
        _, mask = model.complete(batch[PATCHES_KEY], torch.Generator().manual_seed(0))
    iou = float(mask_iou(mask, target).mean())
    constant = float(mask_iou(best_constant_mask(target), target).mean())
    assert iou > constant + 0.05, (iou, constant)


def test_mask_threshold_is_chosen_where_the_soft_mask_fits_best():
    truth = torch.zeros(4, 1, 8, 8)
    truth[:, :, 2:5, 2:5] = 1.0
    soft = truth * 0.3  # right place, low confidence: at 1/2 nothing is predicted
    assert float(mask_iou(soft, truth).mean()) == 0.0
    t = best_threshold(soft, truth)
    assert t < 0.3 and float(mask_iou(soft, truth, t).mean()) == 1.0
