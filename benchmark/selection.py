"""Model selection inside the budget: standard early stopping on the validation split.

A trial trained for longer is not always a better model: on a small training set (the 1000
digits) flows and VAEs overfit, and a model scored at its last step would look worse the more
budget it gets.  The likelihood literature reports models at their best-on-validation state
(early stopping), and genbench does the same:

* at fixed fractions of the budget (:data:`SELECT_EVERY`: every 10%, the end included) a
  validation criterion that fits the family's capabilities is scored on the ``val`` split;
* the state with the best criterion so far is kept (a CPU copy of the model's ``state_dict``);
* when the budget is spent the model is put back into that state, and the trial is evaluated
  there.  The ``test`` split is never read for selection: it stays the split the results are
  reported on.

The criterion of a family, by capability (the first that applies):

===========================  ===========================================================
exact likelihood (flows)     mean validation NLL, dequantised with a fixed generator
latent variables (VAE, ...)  IWAE bound with a small K on the same validation points
translators (CycleGAN, ...)  per target domain, FID of the validation images of every other
                             domain translated into it against that domain's validation
                             images, on the domain-index classifier's features; the mean
                             over targets (a generator that does not translate scores badly)
images from ``sample``       FID of samples against the validation images, on the domain
                             classifier's features (torch-fidelity); conditional families
                             sample from validation inputs
2-D points from ``sample``   unbiased MMD^2 between samples and validation points with a
                             sum of Gaussian kernels at several scales of the data's spread
anything else                no selection: the last state is evaluated, the record says so
===========================  ===========================================================

Scoring is outside the budget (the meter counts only what runs inside ``meter.step()``) and is
timed on its own (``record["timings"]["select_s"]``).  It does not disturb training: it runs in
eval mode without gradients, with fixed generators, and every global random generator is put
back as it was, so a trial takes the same training steps with or without selection.

The record keeps the protocol and the choice: ``record["selection"]`` holds ``criterion``,
``direction``, ``unit``, ``every``, ``history`` (``step``, ``progress``, ``value`` per selection
point; ``value`` None where the criterion was not finite or the state not selectable), ``chosen``
("best on validation" or "last state", with a ``reason``), ``chosen_step``, ``chosen_progress``
and ``chosen_value``; ``record["estimators"]["selection"]`` names the criterion and its sample
counts.  ``record["used"]`` is the compute spent, the whole budget, whichever state is chosen.

A family whose intermediate states are not comparable with its final one (the progressive GAN,
whose early states are lower-resolution models) defines ``selectable(self) -> bool``; states for
which it is False are not scored (the history says so) and cannot be chosen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from genbench.checkpoint import capture_rng, restore_rng
from genbench.datasets import Dataset
from genbench.metrics import draw_samples, evaluating, held_out_condition
from genbench.model import Capability, GenerativeModel
from genbench.toolkit.mmd import mmd2_unbiased

SELECT_EVERY = 0.1  # score at every 10% of the budget, and at its end
VAL_NOISE_SEED = 1234  # dequantisation noise of the validation points: the same at every scoring
SCORE_SEED = 4321  # posterior samples / model samples of a scoring: the same at every scoring


@dataclass(frozen=True)
class SelectionSettings:
    """Sample counts of the validation criteria (small: they are scored about ten times a trial)."""

    val_points: int  # validation points for the NLL / IWAE criteria (at most the split)
    iwae_k: int  # importance samples of the IWAE criterion
    fid_samples: int  # generated images of the FID criterion (reference: as many val images)
    mmd_points: int  # samples and validation points of the MMD criterion
    chunk_rows: int = 4000  # decoder rows per IWAE chunk (points x samples)


SETTINGS = {
    "quick": SelectionSettings(val_points=350, iwae_k=50, fid_samples=500, mmd_points=500),
    "standard": SelectionSettings(val_points=2000, iwae_k=100, fid_samples=2000, mmd_points=1000),
    "test": SelectionSettings(val_points=64, iwae_k=8, fid_samples=100, mmd_points=200),
}


def settings_for(profile: str) -> SelectionSettings:
    return SETTINGS.get(profile, SETTINGS["quick"])


# --- the criteria ------------------------------------------------------------------------------


class Criterion:
    """A validation score of the model's current state.  ``prepare`` does the one-off work (the
    validation points, reference statistics); ``score`` is called at every selection point."""

    name: str = ""
    direction: str = "lower"  # "lower" or "higher" is better
    unit: str = ""

    def describe(self) -> str:
        raise NotImplementedError

    def prepare(self, model: GenerativeModel, dataset: Dataset, device: torch.device) -> None:
        pass

    def score(self, model: GenerativeModel) -> float:
        raise NotImplementedError

    def better(self, value: float, best: float | None) -> bool:
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value < best if self.direction == "lower" else value > best


def dequantized_val(dataset: Dataset, n: int, device) -> torch.Tensor:
    """The first ``n`` validation points, dequantised the way the likelihood metrics dequantise the
    test points (a CPU generator with a fixed seed: the same noise on every device and scoring)."""
    x = dataset.split("val")["x"][:n].cpu()
    return dataset.spec.dequantize(x, generator=torch.Generator().manual_seed(VAL_NOISE_SEED)).to(device)


class ValidationNLL(Criterion):
    direction = "lower"
    unit = "nats per example"

    def __init__(self, settings: SelectionSettings):
        self.n = settings.val_points
        self.name = "val_nll"

    def describe(self) -> str:
        return (f"early stopping on the exact NLL of the first {self.n} dequantised validation points, "
                f"scored every {SELECT_EVERY:.0%} of the budget")

    def prepare(self, model, dataset, device):
        self.x = dequantized_val(dataset, self.n, device)

    def score(self, model):
        from genbench.metrics.likelihood import exact_log_likelihood

        return float(-exact_log_likelihood(model, self.x).mean())


class ValidationIWAE(Criterion):
    direction = "higher"
    unit = "nats per example"

    def __init__(self, settings: SelectionSettings):
        self.n, self.k, self.chunk_rows = settings.val_points, settings.iwae_k, settings.chunk_rows
        self.name = f"val_iwae_k{self.k}"

    def describe(self) -> str:
        return (f"early stopping on the IWAE bound (K={self.k}, fixed posterior samples) of the first "
                f"{self.n} dequantised validation points, scored every {SELECT_EVERY:.0%} of the budget")

    def prepare(self, model, dataset, device):
        self.x = dequantized_val(dataset, self.n, device)

    def score(self, model):
        from genbench.metrics.likelihood import elbo_and_iwae

        _, iwae = elbo_and_iwae(model, self.x, self.k, chunk_rows=self.chunk_rows)
        return float(iwae.mean())


def _statistics(extractor, images: torch.Tensor) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(extractor.features(images)[0])


def _fid_to(reference: dict, extractor, images: torch.Tensor) -> float:
    """FID (torch-fidelity) of ``images`` against ``reference`` statistics; NaN for non-finite images."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    if not torch.isfinite(images).all():
        return math.nan
    return float(fid_statistics_to_metric(_statistics(extractor, images), reference, verbose=False)[KEY_METRIC_FID])


class ValidationFID(Criterion):
    direction = "lower"
    unit = "FID"

    def __init__(self, settings: SelectionSettings):
        self.n = settings.fid_samples
        self.name = f"val_fid_n{self.n}"

    def describe(self) -> str:
        return (f"early stopping on the FID (torch-fidelity) of {self.n} samples against the validation "
                f"images (at most {self.n}) on the domain classifier's features, scored every "
                f"{SELECT_EVERY:.0%} of the budget; conditional families sample from validation inputs")

    def prepare(self, model, dataset, device):
        from genbench.features import domain_extractor

        self.device = device
        self.extractor = domain_extractor(dataset, device)
        self.reference = _statistics(self.extractor, dataset.split("val")["x"][: self.n])
        self.condition = held_out_condition(type(model), dataset, self.n, splits=("val",))

    def score(self, model):
        samples = draw_samples(model, self.n, torch.Generator().manual_seed(SCORE_SEED), self.condition, self.device)
        return _fid_to(self.reference, self.extractor, samples)


class ValidationTranslationFID(Criterion):
    """Why not :class:`ValidationFID` for translators: their ``sample`` translates training images
    into random domains, and FID against the pooled validation images of all domains rewards a
    generator that returns its input untranslated just as much (measured: a StarGAN state with
    target accuracy 0.10 had the lowest pooled FID of its run and was chosen)."""

    direction = "lower"
    unit = "FID"

    def __init__(self, settings: SelectionSettings):
        self.n = settings.fid_samples
        self.name = f"val_translation_fid_n{self.n}"

    def describe(self) -> str:
        return (f"early stopping on the mean over target domains of the FID (torch-fidelity) between the "
                f"first {self.n} validation images of the other domains translated into the target and the "
                f"target's validation images, on the domain-index classifier's features, scored every "
                f"{SELECT_EVERY:.0%} of the budget")

    def prepare(self, model, dataset, device):
        from genbench.toolkit.translation import DOMAIN_KEY, domain_index_extractor

        self.device = device
        self.extractor = domain_index_extractor(dataset, device)
        val = dataset.split("val")
        self.x, dom = val["x"][: self.n].cpu(), val[DOMAIN_KEY][: self.n].cpu()
        self.by_domain = {int(d): dom == d for d in dom.unique()}
        self.reference = {d: _statistics(self.extractor, self.x[m]) for d, m in self.by_domain.items()}

    def score(self, model):
        values = []
        for t, reference in self.reference.items():
            fake = torch.cat([model.translate(self.x[m].to(self.device), s, t).float().cpu()
                              for s, m in self.by_domain.items() if s != t])
            values.append(_fid_to(reference, self.extractor, fake))
        return sum(values) / len(values)  # NaN if any target's translations were not finite


def gaussian_kernels(bandwidths: list[float]):
    """A sum of Gaussian kernels exp(-|a - b|^2 / 2 s^2) over the ``bandwidths``."""
    return lambda a, b: sum(torch.exp(-torch.cdist(a, b) ** 2 / (2 * s * s)) for s in bandwidths)


class ValidationMMD(Criterion):
    direction = "lower"
    unit = "MMD^2"
    # kernel widths as fractions of the data's spread: the smallest resolves a toy mode (std 0.01 on
    # a ring of radius 1, 0.05 on a grid of spacing 2: about 2% of the spread), the largest the layout
    SCALES = (0.02, 0.1, 0.5, 2.0)

    def __init__(self, settings: SelectionSettings):
        self.n = settings.mmd_points
        self.name = f"val_mmd_n{self.n}"

    def describe(self) -> str:
        return (f"early stopping on the unbiased MMD^2 between {self.n} samples and {self.n} validation "
                f"points, sum of Gaussian kernels with widths {list(self.SCALES)} x the validation "
                f"points' RMS spread, scored every {SELECT_EVERY:.0%} of the budget")

    def prepare(self, model, dataset, device):
        self.device = device
        self.val = dataset.split("val")["x"][: self.n].flatten(1).double().cpu()
        spread = float(self.val.var(dim=0).mean().sqrt())
        self.bandwidths = [s * spread for s in self.SCALES]

    def score(self, model):
        samples = draw_samples(model, self.n, torch.Generator().manual_seed(SCORE_SEED), None, self.device)
        if not torch.isfinite(samples).all():
            return math.nan
        return float(mmd2_unbiased(samples.flatten(1).double(), self.val, gaussian_kernels(self.bandwidths)))


def translation_domains(dataset: Dataset) -> int:
    """How many domains the validation split holds images of (0 for a set without domains)."""
    from genbench.toolkit.translation import DOMAIN_KEY

    val = dataset.splits.get("val", {})
    return len(val[DOMAIN_KEY].unique()) if DOMAIN_KEY in val else 0


def choose_criterion(model_cls: type[GenerativeModel], dataset: Dataset,
                     settings: SelectionSettings) -> tuple[Criterion | None, str]:
    """The validation criterion of a family on a dataset, or (None, why there is none)."""
    caps = set(model_cls.capabilities)
    if "val" not in dataset.splits or len(dataset.split("val")["x"]) < 2:
        return None, f"dataset {dataset.name!r} has no validation split to select on"
    if Capability.LOG_LIKELIHOOD in caps:
        return ValidationNLL(settings), ""
    if Capability.LATENT in caps:
        return ValidationIWAE(settings), ""
    if Capability.TRANSLATE in caps and translation_domains(dataset) >= 2:
        return ValidationTranslationFID(settings), ""
    if Capability.SAMPLE in caps and dataset.spec.kind == "image":
        return ValidationFID(settings), ""
    if Capability.SAMPLE in caps and dataset.spec.kind == "points":
        return ValidationMMD(settings), ""
    return None, f"{model_cls.name} has no capability a validation criterion applies to"


# --- the selector --------------------------------------------------------------------------------


class Selector:
    """Scores a criterion at every ``every`` fraction of the budget, keeps the best state, and puts
    the model back into it at the end.  Its state goes into the trial's checkpoints."""

    def __init__(self, criterion: Criterion | None, every: float = SELECT_EVERY, reason: str = ""):
        self.criterion = criterion
        self.every = every
        self.reason = reason  # why there is no criterion
        self.points_done = 0  # selection points passed (scored or skipped)
        self.history: list[dict] = []
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.best_progress: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.error: str | None = None  # a scoring that raised: selection stops, the last state is kept
        self.seconds = 0.0  # time spent scoring (outside the budget)
        self.prepared = False

    @classmethod
    def for_trial(cls, model: GenerativeModel, dataset: Dataset, profile: str) -> Selector:
        criterion, reason = choose_criterion(type(model), dataset, settings_for(profile))
        return cls(criterion, reason=reason)

    def prepare(self, model: GenerativeModel, dataset: Dataset, device) -> None:
        """The criterion's one-off work (validation points, the extractor and its reference
        statistics), timed with the scoring; best done before training starts."""
        if self.criterion is None or self.prepared:
            return
        t0 = time.perf_counter()
        try:
            with preserved_rng():
                self.criterion.prepare(model, dataset, torch.device(device))
        except Exception as exc:  # selection cannot run: the trial trains on, evaluated at its last state
            self.error = f"preparing {self.criterion.name}: {type(exc).__name__}: {exc}"[:500]
        self.seconds += time.perf_counter() - t0
        self.prepared = True

    # --- during training ----------------------------------------------------------------------

    def points(self) -> int:
        """Selection points in a trial: every ``every`` of the budget, the last one at its end."""
        return max(1, math.ceil(1.0 / self.every - 1e-9))

    def next_fraction(self) -> float:
        # counted in whole points, not summed fractions, so the end (1.0) is met exactly; callers
        # compare with a tolerance (3 * 0.1 > 0.3 in floating point, and 18 of 60 steps is 0.3)
        return min(1.0, (self.points_done + 1) * self.every)

    def due(self, progress: float) -> bool:
        return (self.criterion is not None and self.error is None and self.points_done < self.points()
                and progress >= self.next_fraction() - 1e-9)

    def maybe_score(self, model: GenerativeModel, step: int, progress: float) -> bool:
        """Score the model if a selection point has been reached; True if it was scored."""
        if not self.due(progress):
            return False
        while self.points_done < self.points() and self.next_fraction() - 1e-9 <= progress:
            self.points_done += 1  # a long step may pass several points: it is scored once
        t0 = time.perf_counter()
        entry = {"step": int(step), "progress": float(progress)}
        selectable = getattr(model, "selectable", None)
        if selectable is not None and not selectable():
            entry.update(value=None, skipped="not selectable (the family's selectable() is False)")
        else:
            try:
                with preserved_rng(), evaluating(model):
                    value = self.criterion.score(model)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"[:500]
                value = math.nan
            entry["value"] = value if math.isfinite(value) else None
            if self.criterion.better(value, self.best_value):
                self.best_value, self.best_step, self.best_progress = value, int(step), float(progress)
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.history.append(entry)
        self.seconds += time.perf_counter() - t0
        return True

    def restore_best(self, model: GenerativeModel) -> None:
        """Put the model back into its best-on-validation state (nothing to do without one)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    # --- checkpoints and the record ----------------------------------------------------------

    def state(self) -> dict:
        """What a resumed trial needs to choose as an uninterrupted one would (weights_only-loadable)."""
        return {"points_done": self.points_done, "history": [dict(h) for h in self.history],
                "best_value": self.best_value, "best_step": self.best_step, "best_progress": self.best_progress,
                "best_state": self.best_state, "error": self.error, "seconds": self.seconds}

    def load_state(self, state: dict) -> None:
        self.points_done = int(state["points_done"])
        self.history = [dict(h) for h in state["history"]]
        self.best_value, self.best_step = state["best_value"], state["best_step"]
        self.best_progress, self.best_state = state["best_progress"], state["best_state"]
        self.error = self.error or state["error"]  # a criterion that failed to prepare here stays failed
        self.seconds += float(state["seconds"])  # the interrupted run's scoring, plus this run's

    def summary(self) -> dict:
        if self.criterion is None:
            return {"criterion": None, "chosen": "last state", "reason": self.reason}
        out = {"criterion": self.criterion.name, "direction": self.criterion.direction,
               "unit": self.criterion.unit, "every": self.every, "history": [dict(h) for h in self.history],
               "chosen_step": self.best_step, "chosen_progress": self.best_progress,
               "chosen_value": self.best_value}
        if self.error is not None:
            out["error"] = self.error
        if self.best_state is None:
            out["chosen"] = "last state"
            skipped = bool(self.history) and all("skipped" in h for h in self.history)
            out["reason"] = self.error or ("no selection point was selectable" if skipped
                                           else "no selection point gave a finite criterion")
        else:
            out["chosen"] = "best on validation"
        return out

    def estimator(self) -> str:
        if self.criterion is None:
            return f"none: the last state is evaluated ({self.reason})"
        return f"{self.criterion.name}: {self.criterion.describe()}"


class preserved_rng:
    """Every global generator (torch CPU and CUDA, Python, NumPy) put back as it was on exit, and the
    torch ones seeded with a fixed value inside: a scoring draws the same numbers each time and
    leaves training's random stream untouched."""

    def __enter__(self):
        self.saved = capture_rng()
        torch.manual_seed(SCORE_SEED)
        return self

    def __exit__(self, *exc):
        restore_rng(self.saved)
        return False
