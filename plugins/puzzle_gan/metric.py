"""The family's own metric: does the completed image put the key patches where they belong?
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genbench.metrics import SAMPLE_CHUNK, EvalContext, Metric, evaluating
from genbench_plugins.puzzle_gan.dataset import (
    MASK_KEY,
    PATCHES,
    PATCHES_KEY,
    POS_KEY,
    cut_patches,
)

# --- the family metric ---------------------------------------------------------------------------


def best_window_error(images: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Per patch, the least mean absolute difference between it and any window of its image:
    (N, C, H, W) and (N, K, C, s, s) -> (N, K)."""
    n, k, c, s, _ = patches.shape
    windows = F.unfold(images, s)  # (N, C*s*s, P)
    flat = patches.reshape(n, k, c * s * s, 1)
    return (windows[:, None] - flat).abs().mean(2).amin(2)


def at_truth_error(images: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return (cut_patches(images, pos, patches.shape[-1]) - patches).abs().flatten(2).mean(2)


def mask_iou(pred: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per image, IoU of ``pred > threshold`` and ``truth > 1/2`` (1 when both are empty)."""
    p, t = (pred > threshold).flatten(1), (truth > 0.5).flatten(1)
    inter, union = (p & t).sum(1).double(), (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


MASK_THRESHOLDS = tuple(i / 20 for i in range(1, 20))


def best_threshold(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """The threshold of a soft mask with the highest mean IoU against ``truth`` (chosen on validation
    images, so that the model's mask and the constant chance mask are both thresholded where they do
    best, and neither on the test images)."""
    scores = [float(mask_iou(pred, truth, t).mean()) for t in MASK_THRESHOLDS]
    return MASK_THRESHOLDS[max(range(len(scores)), key=scores.__getitem__)]


def best_constant_mask(train_masks: torch.Tensor) -> torch.Tensor:
    """The one mask a model that ignores its patches would predict: the training masks' mean,
    thresholded where its mean IoU with the training masks is highest."""
    mean = train_masks.mean(0, keepdim=True)
    levels = torch.unique(mean)
    if len(levels) > 32:  # large images: 32 quantiles of the mean are plenty
        levels = torch.unique(torch.quantile(levels, torch.linspace(0, 1, 32)))
    candidates = [(mean >= t).float() for t in levels]
    scores = [float(mask_iou(c.expand_as(train_masks), train_masks).mean()) for c in candidates]
    return candidates[max(range(len(scores)), key=scores.__getitem__)]


class PatchCompletion(Metric):
    """Mask IoU and how unchanged the key patches come out (module docstring)."""

    name = "patch_completion"
    headline = {"mask_iou": 190, "mask_iou_chance": 191, "patch_fidelity_at_truth": 195,
                "patch_fidelity_at_truth_chance": 196}
    columns = {"mask_iou": "higher", "mask_iou_half": "higher", "mask_threshold": "none",
               "mask_iou_chance": "none", "patch_fidelity": "higher",
               "patch_fidelity_at_truth": "higher", "patch_fidelity_chance": "none",
               "patch_fidelity_at_truth_chance": "none"}
    needs = frozenset({PATCHES})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset):
        missing = {PATCHES_KEY, MASK_KEY, POS_KEY} - set(dataset.spec.extras)
        if missing:
            return False, f"dataset has no {', '.join(sorted(missing))}"
        return super().applies(model_cls, dataset)

    def estimator(self, profile) -> str:
        return (f"one completion per test image (test[:{profile.n_likelihood_points}]); IoU of mask > t, t chosen "
                f"on the validation images (mask_iou_half: t = 1/2); chance = the best constant mask; "
                f"fidelity = 1 - mean |patch - best-matching window| (pixels in [0, 1]); chance = patches "
                f"against the next real test image")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        test = {k: v.cpu() for k, v in ctx.test_points().items()}
        n_val = min(ctx.profile.n_likelihood_points, len(ctx.dataset.split("val")[PATCHES_KEY]))
        val = {k: v[:n_val].cpu() for k, v in ctx.dataset.split("val").items()}
        g = ctx.generator(offset=67)
        model = ctx.model

        def complete(patches):
            images, masks = [], []
            with evaluating(model):
                for chunk in patches.split(SAMPLE_CHUNK):
                    img, mask = model.complete(chunk.to(ctx.device), generator=g)
                    images.append(img.float().cpu().clamp(0, 1))
                    masks.append(mask.float().cpu())
            return torch.cat(images), torch.cat(masks)

        images, masks = complete(test[PATCHES_KEY])
        threshold = best_threshold(complete(val[PATCHES_KEY])[1], val[MASK_KEY])
        patches = test[PATCHES_KEY]
        shuffled = torch.roll(test["x"], 1, 0)
        return {
            "mask_iou": float(mask_iou(masks, test[MASK_KEY], threshold).mean()),
            "mask_iou_half": float(mask_iou(masks, test[MASK_KEY]).mean()),
            "mask_threshold": threshold,
            "mask_iou_chance": float(mask_iou(best_constant_mask(ctx.dataset.split("train")[MASK_KEY].cpu()),
                                              test[MASK_KEY]).mean()),
            "patch_fidelity": 1.0 - float(best_window_error(images, patches).mean()),
            "patch_fidelity_at_truth": 1.0 - float(at_truth_error(images, patches, test[POS_KEY]).mean()),
            "patch_fidelity_chance": 1.0 - float(best_window_error(shuffled, patches).mean()),
            "patch_fidelity_at_truth_chance": 1.0 - float(at_truth_error(shuffled, patches, test[POS_KEY]).mean()),
        }


