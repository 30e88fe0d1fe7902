"""Model selection inside the budget: a trial is evaluated at its best-on-validation state, the
scoring is outside the budget and leaves training alone, and the test split is never read for it."""

import dataclasses
import time
from dataclasses import dataclass

import pytest
import torch
from conftest import build

from genbench.budget import Budget
from genbench.datasets import Dataset
from genbench.features import domain_extractor
from genbench.manager import PluginManager
from genbench.model import Capability, GenerativeModel
from genbench.profiles import get_profile
from genbench.runner import Trial, perform_trial, train
from genbench.selection import (
    SELECT_EVERY,
    Selector,
    ValidationFID,
    ValidationIWAE,
    ValidationMMD,
    ValidationNLL,
    ValidationTranslationFID,
    choose_criterion,
    gaussian_kernels,
    mmd2_unbiased,
    settings_for,
)


@dataclass
class DriftConfig:
    speed: float = 0.1
    start: float = -0.8
    batch_size: int = 64
    busy_score_s: float = 0.0  # CPU time each scoring burns (eval mode only)


class Drifting(GenerativeModel):
    """A unit Gaussian on 2-D points whose mean walks along x by ``speed`` per step, whatever the
    data: it passes the data's mean (about the origin on ring8) at step 8 and then moves away, so
    its validation NLL is best at step 8 and worse at every later step -- an overfitting model
    whose best state is known exactly."""

    name = "drifting"
    family = "test"
    capabilities = frozenset({Capability.SAMPLE, Capability.LOG_LIKELIHOOD})
    data_kinds = frozenset({"points"})
    Config = DriftConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.loc = torch.nn.Parameter(torch.tensor([config.start, 0.0]))

    def train_step(self, batch, progress):
        with torch.no_grad():
            self.loc[0] += self.config.speed
        return {"loc": float(self.loc.detach()[0])}

    def log_likelihood(self, x):
        if not self.training and self.config.busy_score_s > 0:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < self.config.busy_score_s:  # burns CPU and wall time alike
                pass
        return torch.distributions.Independent(torch.distributions.Normal(self.loc, 1.0), 1).log_prob(x)

    def sample(self, n, generator=None, condition=None):
        return (self.loc + torch.randn(n, 2, generator=generator)).detach()


class NoTestSplit(Dataset):
    """A dataset that fails loudly if anything reads its test split while ``guard`` is set."""

    guard = True

    def split(self, name):
        if name == "test" and self.guard:
            raise AssertionError("the test split was read during training")
        return super().split(name)


def guarded(ds: Dataset) -> NoTestSplit:
    return NoTestSplit(**{f.name: getattr(ds, f.name) for f in dataclasses.fields(ds)})


@pytest.fixture()
def drift_manager():
    manager = PluginManager()
    manager.models.add(Drifting, "test")
    return manager


def test_an_overfitting_model_is_evaluated_at_its_best_state_not_its_last(drift_manager, ring8, tmp_path):
    trial = Trial("drifting", "ring8", 0, Budget.parse("20steps"), profile="test")
    record = perform_trial(trial, drift_manager, lambda _name: ring8, torch.device("cpu"), tmp_path, "t")
    assert record["status"] == "ok", record.get("traceback")
    sel = record["selection"]
    assert sel["criterion"] == "val_nll" and sel["direction"] == "lower" and sel["chosen"] == "best on validation"
    assert [h["step"] for h in sel["history"]] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]  # every 10%, the end too
    assert sel["chosen_step"] == 8 and sel["chosen_progress"] == pytest.approx(0.4)
    assert sel["chosen_value"] == min(h["value"] for h in sel["history"])
    assert record["used"]["steps"] == 20  # the compute spent is the whole budget
    assert record["final_losses"]["loc"] == pytest.approx(1.2)  # the last step's, as trained
    assert record["estimators"]["selection"].startswith("val_nll: early stopping on the exact NLL")
    assert record["timings"]["select_s"] > 0

    # the metrics are those of the step-8 state (mean at the origin), not of the last (mean at 1.2)
    at = {}
    for steps in (8, 20):
        model = build(Drifting, ring8)
        train(model, ring8, Budget.parse(f"{steps}steps"), 0, "cpu")
        x = ring8.split("test")["x"][: get_profile("test").ais_points]  # the points exact_likelihood uses
        with torch.no_grad():
            at[steps] = float(-model.log_likelihood(x).mean())
    assert record["metrics"]["nll"] == pytest.approx(at[8], rel=1e-3)
    assert at[20] > at[8] + 0.2


def test_scoring_is_outside_the_budget(ring8):
    # a step budget: exactly the budget's steps are taken, and every selection point is scored
    model = build(Drifting, ring8)
    selector = Selector.for_trial(model, ring8, "test")
    usage, _ = train(model, ring8, Budget.parse("30steps"), 0, "cpu", selector=selector)
    assert usage.steps == 30 and len(selector.history) == round(1 / SELECT_EVERY)

    # a time budget with a criterion that burns 50 ms a scoring: none of it is counted as used
    model = build(Drifting, ring8, busy_score_s=0.05)
    selector = Selector.for_trial(model, ring8, "test")
    usage, _ = train(model, ring8, Budget.parse("0.2s"), 0, "cpu", selector=selector)
    assert len(selector.history) == 10  # all ten points scored: scoring did not eat the budget
    assert selector.seconds >= 10 * 0.05
    assert 0.2 <= usage.seconds < 0.2 + 0.05  # the budget, plus at most a (sub-millisecond) step


@pytest.mark.parametrize("model_name", ["vae", "gan"])
def test_scoring_leaves_training_alone(model_name, manager, ring8):
    """The same steps with and without selection: the global RNG and the model's mode survive."""
    cls = manager.models.get(model_name)
    plain = build(cls, ring8)
    _, losses_plain = train(plain, ring8, Budget.parse("30steps"), 0, "cpu")
    selected = build(cls, ring8)
    selector = Selector.for_trial(selected, ring8, "test")
    _, losses_selected = train(selected, ring8, Budget.parse("30steps"), 0, "cpu", selector=selector)
    assert len(selector.history) == 10
    assert losses_selected == losses_plain  # the last step's losses, bit for bit
    if selector.best_step == 30:  # the chosen state is the last one: the weights agree too
        for a, b in zip(plain.state_dict().values(), selected.state_dict().values()):
            assert torch.equal(a, b)


def test_criteria_by_capability(manager, digits, ring8):
    s = settings_for("test")
    assert isinstance(choose_criterion(manager.models.get("realnvp"), digits, s)[0], ValidationNLL)
    assert isinstance(choose_criterion(manager.models.get("planar-flow"), ring8, s)[0], ValidationNLL)
    for name in ("vae", "iwae", "vae-planar"):
        if name in manager.models:
            assert isinstance(choose_criterion(manager.models.get(name), digits, s)[0], ValidationIWAE)
    for name in ("gan", "dcgan", "progan", "aae", "wae-mmd", "wae-gan", "ae-gmm"):
        if name in manager.models:
            assert isinstance(choose_criterion(manager.models.get(name), digits, s)[0], ValidationFID), name
    assert isinstance(choose_criterion(manager.models.get("gan"), ring8, s)[0], ValidationMMD)

    class Nothing(GenerativeModel):
        name = "nothing"
        capabilities = frozenset()

    criterion, why = choose_criterion(Nothing, ring8, s)
    assert criterion is None and "no capability" in why
    selector = Selector.for_trial(build(Drifting, ring8), ring8, "test")
    selector.criterion, selector.reason = None, why
    assert selector.summary() == {"criterion": None, "chosen": "last state", "reason": why}
    assert selector.estimator().startswith("none: the last state is evaluated")


class KnownTranslator(torch.nn.Module):
    """translate(x, s, t) by the domains' own transforms (``perfect``), or the input unchanged."""

    def __init__(self, names, perfect: bool):
        super().__init__()
        self.names, self.perfect = names, perfect
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a state for the selector to keep

    def translate(self, x, source, target):
        from genbench_plugins.domains import DOMAINS

        if not self.perfect:
            return x
        return DOMAINS[self.names[target]].forward(DOMAINS[self.names[source]].to_original(x))


def test_translators_are_selected_on_translations_into_each_target_domain(manager, four):
    """Pooled FID of samples cannot tell a translator from a copier of its inputs; the translation
    criterion can: the known transforms score far better than returning the input."""
    from genbench_plugins.domains import FOUR_DOMAINS, load_digits_pair

    s = settings_for("test")
    for name, data in (("stargan", four), ("cyclegan", load_digits_pair())):
        criterion = choose_criterion(manager.models.get(name), data, s)[0]
        assert isinstance(criterion, ValidationTranslationFID), name
    criterion = ValidationTranslationFID(s)
    perfect, copier = KnownTranslator(FOUR_DOMAINS, True), KnownTranslator(FOUR_DOMAINS, False)
    criterion.prepare(perfect, four, "cpu")
    assert len(criterion.reference) == 4
    with torch.no_grad():
        good, bad = criterion.score(perfect), criterion.score(copier)
    assert good < bad / 5, (good, bad)
    assert "translated into the target" in criterion.describe()


def test_mmd_sees_a_collapsed_sampler(ring8):
    val = ring8.split("val")["x"][:300]
    spread = float(val.var(dim=0).mean().sqrt())
    kernel = gaussian_kernels([k * spread for k in ValidationMMD.SCALES])
    same = mmd2_unbiased(ring8.split("train")["x"][:300], val, kernel)
    collapsed = mmd2_unbiased(ring8.modes[:1].repeat(300, 1) + 0.01 * torch.randn(300, 2), val, kernel)
    assert abs(same) < 0.05 and collapsed > 10 * max(abs(same), 1e-3)


def test_the_test_split_is_never_read_for_selection(manager, digits, ring8):
    from genbench_plugins.text2image import load_digits_captions

    captions = load_digits_captions()
    domain_extractor(digits, "cpu")  # the extractor (trained once, cached) reports its accuracy on test
    domain_extractor(captions, "cpu")
    for name, data in [("realnvp", digits), ("vae", digits), ("gan", digits), ("gan", ring8),
                       ("text2image-gan", captions)]:
        cls = manager.models.get(name)
        ds = guarded(data)
        model = build(cls, ds)
        selector = Selector.for_trial(model, ds, "test")
        train(model, ds, Budget.parse("10steps"), 0, "cpu", selector=selector)
        assert len(selector.history) == 10 and selector.error is None, (name, selector.error)
        assert any(h["value"] is not None for h in selector.history), name


def test_progressive_gan_is_selected_among_full_resolution_states(manager, digits):
    cls = manager.models.get("progan")
    domain_extractor(digits, "cpu")
    model = build(cls, digits)
    selector = Selector.for_trial(model, digits, "test")
    train(model, digits, Budget.parse("30steps"), 0, "cpu", selector=selector)
    from genbench_plugins.progan import schedule

    def full(progress):  # the last stage, faded in (alpha = 1)
        return schedule(progress, model.n_stages, model.config.fade, model.config.last_share) == \
            (model.n_stages - 1, 1.0)

    scored = [h for h in selector.history if h["value"] is not None]
    assert scored and all(full(h["progress"]) for h in scored)
    assert any(not full(h["progress"]) for h in selector.history)
    assert all("skipped" in h for h in selector.history if not full(h["progress"]))
    assert int(model.stage) == model.n_stages - 1 and float(model.alpha) == 1.0


def test_a_restored_ex_post_mixture_is_refitted(manager, digits):
    """ae-gmm caches a mixture fitted on its codes: restoring other weights must drop it."""
    cls = manager.models.get("ae-gmm")
    model = build(cls, digits, gmm_fit_points=64, gmm_components=2)
    train(model, digits, Budget.parse("3steps"), 0, "cpu")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.fit_ex_post()
    train(model, digits, Budget.parse("3steps"), 1, "cpu")
    model.fit_ex_post()
    model.load_state_dict(saved)
    assert model.ex_post is None


class FailsToScore(Drifting):
    name = "fails-to-score"

    def log_likelihood(self, x):
        if not self.training:
            raise RuntimeError("cannot score")
        return super().log_likelihood(x)


def test_a_criterion_that_fails_is_recorded_and_the_last_state_kept(ring8):
    model = build(FailsToScore, ring8)
    selector = Selector.for_trial(model, ring8, "test")
    usage, _ = train(model, ring8, Budget.parse("10steps"), 0, "cpu", selector=selector)
    assert usage.steps == 10 and float(model.loc.detach()[0]) == pytest.approx(0.2)  # trained on, last state
    summary = selector.summary()
    assert summary["chosen"] == "last state" and "RuntimeError: cannot score" in summary["reason"]
    assert [h["value"] for h in summary["history"]] == [None]  # selection stopped at its first failure
