"""DCGAN, InfoGAN and the progressive GAN: shapes and ranges, properties of their objectives at
initialisation, determinism, ProGAN's budget-driven growth schedule and fade-in, and the two family
metrics (InfoGAN's Hungarian-matched code accuracy, ProGAN's FID per stage) on analytic cases."""

import dataclasses
import itertools
import math

import pytest
import torch
from conftest import build, train_steps
from torch import nn

import genbench_plugins.infogan as infogan_mod
import genbench_plugins.progan as progan_mod
from genbench.datasets import MNIST_SPEC
from genbench.errors import GenbenchError
from genbench.features import Extractor
from genbench.metrics import EvalContext
from genbench.model import Capability, GenerativeModel
from genbench.profiles import get_profile
from genbench.toolkit import gradient_penalty
from genbench_plugins.dcgan import DCGAN
from genbench_plugins.gan import GAN
from genbench_plugins.infogan import InfoGAN, InfoGANCodeAccuracy, hungarian_accuracy
from genbench_plugins.progan import ProGAN, ProGANStageFID, schedule

FAMILIES = [DCGAN, InfoGAN, ProGAN]


# --- every family -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_trains_and_samples_in_range(cls, digits):
    model = build(cls, digits)
    usage, losses = train_steps(model, digits, 3)
    assert usage.steps == 3 and all(math.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 8, 8)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_mnist_shapes_are_cropped_back_to_28x28(cls):
    torch.manual_seed(0)
    model = cls(cls.make_config({"batch_size": 4}), MNIST_SPEC)
    levels = torch.randint(0, 256, (4, 1, 28, 28))
    # progress 0.99: the progressive GAN's last stage, the full 32x32 canvas
    losses = model.train_step({"x": (levels + 0.5) / 256, "y": torch.zeros(4, dtype=torch.long)}, 0.99)
    assert all(math.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        x = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.parametrize("cls", FAMILIES, ids=lambda c: c.name)
def test_same_seed_same_samples(cls, digits):
    out = []
    for _ in range(2):
        model = build(cls, digits, seed=3)
        train_steps(model, digits, 2, seed=3)
        model.eval()
        with torch.no_grad():
            out.append(model.sample(8, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(out[0], out[1])
    other = build(cls, digits, seed=4)
    train_steps(other, digits, 2, seed=4)
    other.eval()
    with torch.no_grad():
        assert not torch.equal(out[0], other.sample(8, generator=torch.Generator().manual_seed(5)))


def test_non_image_data_is_refused_with_the_fix(ring8):
    for cls in FAMILIES:
        assert not cls.applies_to(ring8.spec)[0]
        with pytest.raises(GenbenchError, match="image dataset"):
            cls(cls.make_config(), ring8.spec)


# --- DCGAN ----------------------------------------------------------------------------------------


def test_dcgan_discriminator_loss_is_2_log_2_at_init(digits):
    # N(0, 0.02) weights leave D's logits near 0, i.e. D(x) = 1/2 on every input
    model = build(DCGAN, digits)
    with torch.no_grad():
        real = model.to_canvas(digits.split("train")["x"][:128])
        fake = model.generator(torch.randn(128, model.latent_dim, generator=torch.Generator().manual_seed(0)))
        assert model.discriminator_loss(real, fake).item() == pytest.approx(2 * math.log(2), abs=0.15)


def test_dcgan_architecture_follows_the_guidelines(digits):
    model = build(DCGAN, digits)
    d_layers = list(model.discriminator.net)
    assert isinstance(d_layers[0], nn.Conv2d) and not isinstance(d_layers[1], nn.BatchNorm2d)  # no BN on D's input
    assert any(isinstance(m, nn.BatchNorm2d) for m in d_layers)
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    assert isinstance(list(model.generator.net)[-1], nn.Tanh)
    assert float(model.generator.net[0].weight.detach().std()) == pytest.approx(0.02, rel=0.1)


def test_dcgan_decoder_is_the_gaussian_observation_model(digits):
    model = build(DCGAN, digits, obs_sigma=0.1)
    train_steps(model, digits, 2)
    model.eval()
    z = model.prior().sample((5,))
    px = model.decode(z)
    assert px.batch_shape == (5,) and px.event_shape == (1, 8, 8)
    mean = model.generate(z)
    assert torch.allclose(px.mean, mean)
    d = 64
    expected = -d * math.log(0.1) - 0.5 * d * math.log(2 * math.pi)
    assert torch.allclose(px.log_prob(mean), torch.full((5,), expected), atol=1e-4)
    assert model.prior().log_prob(z).shape == (5,)
    # in eval mode batch norm uses running statistics: an image depends on its own noise only
    assert torch.allclose(model.generate(z[:1]), mean[:1], atol=1e-6)


# --- InfoGAN ------------------------------------------------------------------------------------


def test_infogan_mutual_information_terms_at_init(digits):
    model = build(InfoGAN, digits)
    with torch.no_grad():
        noise, cat, cont = model.draw_codes(256, torch.Generator().manual_seed(0))
        _, q = model.discriminator(model.generator(model.latent(noise, cat, cont)))
        cat_ll, cont_ll = model.info_loglik(q, cat, cont)
    # Q is uniform over the 10 categories at init: E[log Q(c|x)] = -log 10, so L_I = 0
    assert cat_ll.item() == pytest.approx(-math.log(10), abs=0.05)
    # Q's Gaussian is N(0, 1) at init and c ~ U[-1, 1]: each code gives -E[c^2]/2 - log(2 pi)/2
    assert cont_ll.item() == pytest.approx(2 * (-1 / 6 - 0.5 * math.log(2 * math.pi)), abs=0.3)
    assert model.code_entropy() == pytest.approx(math.log(10) + 2 * math.log(2))


def test_infogan_training_raises_the_information_bound(digits):
    model = build(InfoGAN, digits)
    _, losses = train_steps(model, digits, 40)
    # G and Q both maximise L_I: Q's cross-entropy on the categorical code falls well below log 10
    assert losses["q_cat_nll"] < 0.6 * math.log(10)
    assert losses["mi_lower_bound"] > 0


def test_infogan_condition_sets_the_categorical_code(digits):
    model = build(InfoGAN, digits)
    train_steps(model, digits, 3)
    model.eval()
    assert Capability.CONDITIONAL in InfoGAN.capabilities

    def draw(codes):
        with torch.no_grad():
            return model.sample(len(codes), generator=torch.Generator().manual_seed(1), condition=codes)

    threes, fives = draw(torch.full((6,), 3)), draw(torch.full((6,), 5))
    assert torch.equal(threes, draw(torch.full((6,), 3)))
    assert not torch.allclose(threes, fives)
    for bad, match in [(torch.full((6,), 0.5), "integer"), (torch.zeros(5, dtype=torch.long), "shape"),
                       (torch.full((6,), 10), "0..9")]:
        with pytest.raises(GenbenchError, match=match):
            model.sample(6, generator=torch.Generator(), condition=bad)


# --- Hungarian-matched code accuracy ---------------------------------------------------------------


def test_hungarian_accuracy_perfect_permutation_and_random():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(10, (5000,), generator=g)
    perm = torch.randperm(10, generator=g)
    assert hungarian_accuracy(codes, perm[codes], 10, 10) == 1.0
    random_labels = torch.randint(10, (5000,), generator=g)
    assert 0.09 < hungarian_accuracy(codes, random_labels, 10, 10) < 0.13


def test_hungarian_accuracy_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        codes = torch.randint(5, (60,), generator=g)
        labels = torch.where(torch.rand(60, generator=g) < 0.5, (codes + 2) % 5, torch.randint(5, (60,), generator=g))
        best = max(sum(int(((codes == c) & (labels == p[c])).sum()) for c in range(5))
                   for p in itertools.permutations(range(5))) / 60
        assert hungarian_accuracy(codes, labels, 5, 5) == pytest.approx(best)
    # more codes than classes: the unmatched codes' samples count as errors
    assert hungarian_accuracy(torch.arange(4), torch.tensor([0, 1, 0, 1]), 4, 2) == 0.5


class PixelIndexClassifier(nn.Module):
    """A stand-in for the domain classifier: class k is the brightest of the first 10 pixels.
    Features are the raw pixels (so FID compares pixel statistics)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        flat = x.flatten(1)
        return flat + 0 * self.dummy, flat[:, :10] * 10


PIXEL_EXTRACTOR = Extractor("pixels", PixelIndexClassifier(), "", 1.0)


class CodedImages(GenerativeModel):
    """Draws, for categorical code c, an image whose label is ``mapping(c)``."""

    name, capabilities, n_categories = "coded", frozenset({Capability.SAMPLE, Capability.CONDITIONAL}), 10

    def __init__(self, spec, mapping):
        super().__init__(None, spec)
        self.mapping = mapping
        self.dummy = nn.Parameter(torch.zeros(()))

    def sample(self, n, generator=None, condition=None):
        labels = self.mapping(condition, generator)
        x = torch.zeros(n, *self.spec.shape)
        x.view(n, -1)[torch.arange(n), labels] = 1.0
        return x


def test_code_accuracy_metric_on_synthetic_assignments(digits, monkeypatch):
    monkeypatch.setattr(infogan_mod, "domain_extractor", lambda dataset, device="cpu": PIXEL_EXTRACTOR)
    metric, profile = InfoGANCodeAccuracy(), get_profile("test")
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(2))
    perfect = CodedImages(digits.spec, lambda c, g: perm[c])
    out = metric.compute(EvalContext(perfect, digits, profile, 0, "cpu"))
    assert out == {"infogan_code_accuracy": 1.0}
    random = CodedImages(digits.spec, lambda c, g: torch.randint(10, (len(c),), generator=g))
    big = dataclasses.replace(profile, n_fid_samples=5000)
    acc = metric.compute(EvalContext(random, digits, big, 0, "cpu"))["infogan_code_accuracy"]
    assert 0.09 < acc < 0.13


def test_family_metrics_apply_only_to_their_family(digits):
    code_acc, stage_fid = InfoGANCodeAccuracy(), ProGANStageFID()
    assert code_acc.applies(InfoGAN, digits)[0] and stage_fid.applies(ProGAN, digits)[0]
    for cls in (DCGAN, GAN, ProGAN):
        assert not code_acc.applies(cls, digits)[0]
    for cls in (DCGAN, GAN, InfoGAN):
        assert not stage_fid.applies(cls, digits)[0]


# --- progressive GAN ------------------------------------------------------------------------------


def test_progan_schedule_follows_the_budget():
    assert [schedule(p, 3)[0] for p in (0.0, 0.34, 0.99)] == [0, 1, 2]
    assert schedule(0.0, 3) == (0, 1.0)  # nothing to fade in at the first stage
    assert schedule(1 / 3, 3)[1] == pytest.approx(0.0)  # a stage begins with alpha 0
    assert schedule(1 / 3 + 1 / 12, 3)[1] == pytest.approx(0.5)
    assert schedule(1 / 3 + 1 / 6, 3)[1] == pytest.approx(1.0)  # faded in at half of the stage
    assert schedule(0.6, 3) == (1, 1.0)
    assert schedule(1.0, 3)[0] == 2 and schedule(0.99, 4)[0] == 3


def test_progan_rejects_a_fade_share_outside_0_1(digits):
    with pytest.raises(GenbenchError, match=r"fade=1.5 .* \[0, 1\]"):
        build(ProGAN, digits, fade=1.5)


def test_progan_train_step_grows_with_progress(digits):
    model = build(ProGAN, digits, last_share=1 / 3, n_critic=1)  # equal shares, one critic step
    assert model.resolutions == [2, 4, 8]
    batch = {"x": digits.split("train")["x"][:16]}
    losses = model.train_step(batch, 0.4)
    assert int(model.stage) == 1 and float(model.alpha) == pytest.approx(0.4)
    assert losses["stage"] == 1 and losses["gp"] >= 0

    def adam_steps():
        return {int(s["step"]) for opt in model.optimizers.values() for s in opt.state.values()}

    model.train_step(batch, 0.45)
    assert adam_steps() == {2}
    model.train_step(batch, 0.9)
    assert int(model.stage) == 2 and float(model.alpha) == 1.0
    assert adam_steps() == {1}  # Adam's moments start afresh with each new stage


def test_progan_fade_in_starts_from_the_previous_stage(digits):
    model = build(ProGAN, digits)
    z = torch.randn(8, model.latent_dim)
    x = digits.split("train")["x"][:8]
    up = progan_mod.upsample
    with torch.no_grad():
        for s in (1, 2):
            # alpha = 0: the new block contributes nothing; the output is the old one, upsampled
            assert torch.allclose(model.generator(z, s, 0.0), up(model.generator(z, s - 1, 1.0)), atol=1e-5)
            real = model.real_at(x, s, 0.0)
            assert torch.allclose(real, up(model.real_at(x, s - 1, 1.0)), atol=1e-6)
            assert torch.allclose(model.discriminator(real, s, 0.0),
                                  model.discriminator(progan_mod.downsample(real), s - 1, 1.0), atol=1e-5)


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = <w, x> has gradient w everywhere: the penalty is (||w|| - 1)^2 exactly
    w = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(0))
    real, fake = torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8)
    gp = gradient_penalty(lambda x: (x * w).flatten(1).sum(1), real, fake)
    assert gp.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    unit = w / w.norm()
    assert gradient_penalty(lambda x: (x * unit).flatten(1).sum(1), real, fake).item() == pytest.approx(0, abs=1e-10)


def test_progan_samples_full_resolution_before_the_last_stage(digits):
    model = build(ProGAN, digits)
    model.train_step({"x": digits.split("train")["x"][:16]}, 0.0)
    model.eval()
    with torch.no_grad():
        x = model.sample(4, generator=torch.Generator().manual_seed(0))
        assert x.shape == (4, 1, 8, 8)
        # stage 0 is 2x2: each 4x4 quadrant is one upsampled pixel
        assert torch.equal(x, progan_mod.upsample(x[..., ::4, ::4], 4))
        assert model.sample_at_stage(4, 0, torch.Generator()).shape == (4, 1, 2, 2)
    with pytest.raises(GenbenchError, match="not reached"):
        model.sample_at_stage(4, 1, torch.Generator())


class BlurredData(GenerativeModel):
    """A 'progressive model' whose stage-s output is the training data average-pooled to that
    stage's resolution, in order: its stage FIDs against the same data are 0."""

    name, capabilities, progressive = "blurred", frozenset({Capability.SAMPLE}), True

    def __init__(self, spec, data, reached):
        super().__init__(None, spec)
        self.size, self.resolutions, self.data = 8, [2, 4, 8], data
        self.register_buffer("stage", torch.tensor(reached))
        self.dummy = nn.Parameter(torch.zeros(()))
        self.served = {}

    def sample_at_stage(self, n, stage, generator=None):
        start = self.served.get(stage, 0)
        self.served[stage] = start + n
        return progan_mod.downsample(self.data[start : start + n], 8 // self.resolutions[stage])


def test_stage_fid_is_zero_for_the_blurred_data_and_absent_for_unreached_stages(digits, monkeypatch):
    monkeypatch.setattr(progan_mod, "domain_extractor", lambda dataset, device="cpu": PIXEL_EXTRACTOR)
    profile = dataclasses.replace(get_profile("test"), n_fid_samples=500, n_reference=500)
    train = digits.split("train")["x"][:500]
    out = ProGANStageFID().compute(EvalContext(BlurredData(digits.spec, train, 1), digits, profile, 0, "cpu"))
    assert set(out) == {"fid_stage1", "fid_stage2"}  # stage 3 was not reached: no column
    assert out["fid_stage1"] == pytest.approx(0, abs=1e-3) and out["fid_stage2"] == pytest.approx(0, abs=1e-3)
    # other images of the same distribution: positive FIDs, one for every stage reached
    shifted = BlurredData(digits.spec, digits.split("train")["x"][500:1000], 2)
    out = ProGANStageFID().compute(EvalContext(shifted, digits, profile, 0, "cpu"))
    assert set(out) == {"fid_stage1", "fid_stage2", "fid_stage3"} and all(v > 0 for v in out.values())


def test_stage_fid_on_a_trained_progan(digits, monkeypatch):
    monkeypatch.setattr(progan_mod, "domain_extractor", lambda dataset, device="cpu": PIXEL_EXTRACTOR)
    model = build(ProGAN, digits)
    train_steps(model, digits, 6)  # progress reaches 5/6: the last stage
    out = ProGANStageFID().compute(EvalContext(model, digits, get_profile("test"), 0, "cpu"))
    assert set(out) == {"fid_stage1", "fid_stage2", "fid_stage3"}
    assert all(math.isfinite(v) and v >= 0 for v in out.values())
