"""The family's own metric: do the images drawn from held-out captions show what the caption says?
"""

from __future__ import annotations

from genbench.errors import DatasetError
from genbench.features import domain_extractor
from genbench.metrics import EvalContext, Metric, draw_samples
from genbench.model import Capability
from genbench_plugins.text2image.dataset import (
    CAPTION_KEY,
    mean_ink,
    seen_phrasing,
)

# --- the family metric ---------------------------------------------------------------------------


class CaptionAgreement(Metric):
    """Does the image say what the caption says?  (module docstring)"""

    name = "caption_agreement"
    headline = {"caption_digit_accuracy": 160, "caption_digit_accuracy_unseen": 170,
                "caption_weight_accuracy": 180}
    columns = {"caption_digit_accuracy": "higher", "caption_digit_accuracy_seen": "higher",
               "caption_digit_accuracy_unseen": "higher", "caption_weight_accuracy": "higher",
               "caption_weight_accuracy_chance": "none"}
    needs = frozenset({Capability.SAMPLE, Capability.CONDITIONAL})
    data_kinds = frozenset({"image"})

    def applies(self, model_cls, dataset):
        if model_cls.condition_key != CAPTION_KEY:
            return False, "only for models that draw images from captions (condition_key 'caption')"
        if CAPTION_KEY not in dataset.spec.extras:
            return False, "dataset has no captions"
        return super().applies(model_cls, dataset)

    def estimator(self, profile) -> str:
        return (f"one image per test caption (test[:{profile.n_likelihood_points}]); digit read by the domain "
                f"classifier (argmax); unseen = (digit, phrasing) pairs absent from training; weight = mean ink "
                f"above/below the digit's training median")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        threshold = ctx.dataset.info.get("ink_threshold")
        if threshold is None:
            raise DatasetError(f"dataset {ctx.dataset.name!r} has no ink_threshold in its info; build captioned sets "
                               "with genbench_plugins.text2image.make_caption_dataset")
        test = {k: v.cpu() for k, v in ctx.test_points().items()}
        images = draw_samples(ctx.model, len(test[CAPTION_KEY]), ctx.generator(offset=53), test[CAPTION_KEY],
                              ctx.device)
        _, logits = domain_extractor(ctx.dataset, ctx.device).features(images)
        right = logits.argmax(1) == test["y"]
        unseen = ~seen_phrasing(test["y"], test["phrasing"])
        thick = (mean_ink(images.clamp(0, 1)) > threshold.cpu()[test["y"]]).long()
        thick_share = float(test["thick"].double().mean())
        result = {
            "caption_digit_accuracy": float(right.double().mean()),
            "caption_weight_accuracy": float((thick == test["thick"]).double().mean()),
            # always answering the more common weight word of these captions
            "caption_weight_accuracy_chance": max(thick_share, 1.0 - thick_share),
        }
        for name, rows in (("seen", ~unseen), ("unseen", unseen)):
            if rows.any():  # the test split holds both; a tiny custom split might not
                result[f"caption_digit_accuracy_{name}"] = float(right[rows].double().mean())
        return result


