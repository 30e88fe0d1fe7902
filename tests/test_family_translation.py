"""Translation families: the derived domain datasets, CycleGAN, StarGAN and their metrics."""

import pytest
import torch
from conftest import MNIST_RAW, build, train_steps
from torch import nn

from genbench.errors import GenbenchError
from genbench.features import Extractor, accuracy, train_domain_classifier
from genbench.metrics import EvalContext
from genbench.profiles import get_profile
from genbench.toolkit import domain_index_view, gradient_penalty
from genbench_plugins import domains as dom_mod
from genbench_plugins.cyclegan import CycleGAN, lsgan_d_loss, lsgan_g_loss
from genbench_plugins.domains import (
    DOMAINS,
    TranslationMetrics,
    load_digits_domains,
    load_digits_pair,
    load_mnist_pair,
    translation_scores,
)
from genbench_plugins.stargan import StarGAN


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # small convolutions run several times faster on one thread than on two contended ones
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)




@pytest.fixture(scope="module")
def pair():
    return load_digits_pair()


@pytest.fixture(scope="module")
def classifiers(four):
    """A digit classifier on the base digits and a domain-index classifier on digits-domains, both
    trained briefly (the metric itself uses genbench's cached, fully trained ones)."""
    base = four.info["base"]
    digit = train_domain_classifier(base, epochs=10)
    view = domain_index_view(four)
    domain = train_domain_classifier(view, epochs=3)
    test = base.split("test")
    digit_ext = Extractor("digits", digit, "", accuracy(digit, test["x"], test["y"]))
    domain_ext = Extractor("domains", domain, "", accuracy(domain, view.split("test")["x"], view.split("test")["y"]))
    return domain_ext, digit_ext


# --- datasets -------------------------------------------------------------------------------------


def test_domain_datasets_are_deterministic_balanced_and_unpaired(four):
    again = load_digits_domains()
    base = four.info["base"]
    names = four.spec.extras["domain"]["names"]
    assert names == ["original", "inverted", "rotated", "thick"]
    for split in ("train", "val", "test"):
        data, b = four.split(split), base.split(split)
        for key in ("x", "y", "domain"):
            assert torch.equal(data[key], again.split(split)[key])
        assert data["domain"].dtype == torch.long
        assert torch.equal(data["y"], b["y"])
        counts = torch.bincount(data["domain"], minlength=4)
        assert int(counts.max() - counts.min()) <= 1
        # every base image is stored once, in its dealt domain, through that domain's transform
        for k, name in enumerate(names):
            rows = data["domain"] == k
            assert torch.equal(data["x"][rows], DOMAINS[name].forward(b["x"][rows]))
        # unpaired: no image of one domain has its counterpart (same base image) in another
        for s in range(4):
            for t in range(4):
                if s != t:
                    counterparts = DOMAINS[names[t]].forward(b["x"][data["domain"] == s]).flatten(1)
                    present = data["x"][data["domain"] == t].flatten(1)
                    assert not (counterparts[:, None, :] == present[None, :, :]).all(-1).any()
    assert data["x"].min() >= 0 and data["x"].max() <= 1


def test_domain_transforms_and_their_inverses(digits):
    x = digits.split("test")["x"][:50]
    exact = [name for name, d in DOMAINS.items() if d.exact_inverse]
    assert exact == ["original", "inverted", "rotated"]
    for name in exact:
        assert torch.allclose(DOMAINS[name].to_original(DOMAINS[name].forward(x)), x, rtol=0, atol=1e-6)
    thick = DOMAINS["thick"].forward(x)
    assert (thick >= x).all() and (thick > x).any()  # dilation only adds ink
    closing = DOMAINS["thick"].to_original(thick)
    assert (closing >= x).all() and (closing <= thick).all()  # closing lies between x and its dilation
    levels = 17  # values stay bin centres (k + 0.5) / 17
    for name in DOMAINS:
        k = DOMAINS[name].forward(x) * levels - 0.5
        assert torch.allclose(k, k.round(), atol=1e-4)


def test_registration_and_which_models_apply(manager, four, pair):
    from genbench.suite import runs_by_default

    assert manager.datasets.get("digits-domains").spec == four.spec
    assert manager.datasets.get("digits-pair").spec == pair.spec
    assert pair.spec.extras == {"domain": {"names": ["original", "thick"]}}
    assert manager.datasets.get("digits-domains").in_default_suite
    assert not manager.datasets.get("mnist-domains").in_default_suite
    assert not manager.datasets.get("mnist-pair").in_default_suite
    cyc, star, gan = (manager.models.get(n) for n in ("cyclegan", "stargan", "gan"))
    assert cyc.applies_to(pair.spec)[0] and star.applies_to(pair.spec)[0] and star.applies_to(four.spec)[0]
    ok, why = cyc.applies_to(four.spec)
    assert not ok and "two domains" in why
    ok, why = cyc.applies_to(manager.datasets.get("digits").spec)
    assert not ok and "domain" in why
    assert not runs_by_default(gan, pair.spec)  # plain samplers stay on the base sets under --all
    assert "translation" in manager.metrics


def test_mnist_pair_from_the_raw_test_files():
    ds = load_mnist_pair(root=MNIST_RAW, limit=200)
    assert ds.spec.shape == (1, 28, 28) and ds.spec.name == "mnist-pair"
    test = ds.split("test")
    assert test["x"].shape == (200, 1, 28, 28)
    counts = torch.bincount(test["domain"], minlength=2)
    assert counts.tolist() == [100, 100]
    base = ds.info["base"].split("test")["x"]
    rows = test["domain"] == 1
    assert torch.equal(test["x"][rows], DOMAINS["thick"].forward(base[rows]))
    for cls in (CycleGAN, StarGAN):  # the networks scale to 28x28
        model = build(cls, ds)
        losses = train_steps(model, ds, 1)[1]
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
        assert model.translate(test["x"][:3], 0, 1).shape == (3, 1, 28, 28)


def test_domain_index_view_relabels_by_domain(four):
    view = domain_index_view(four)
    assert view.spec.num_classes == 4 and view.spec.name != four.spec.name
    for split in ("train", "test"):
        assert torch.equal(view.split(split)["y"], four.split(split)["domain"])
        assert view.split(split)["x"] is four.split(split)["x"]


# --- losses ---------------------------------------------------------------------------------------


def test_lsgan_losses_at_known_discriminator_outputs():
    ones, zeros, half = torch.ones(4, 1, 4, 4), torch.zeros(4, 1, 4, 4), torch.full((4, 1, 4, 4), 0.5)
    assert float(lsgan_d_loss(ones, zeros)) == 0.0  # a perfect discriminator
    assert float(lsgan_d_loss(half, half)) == pytest.approx(0.5 * (0.25 + 0.25))
    assert float(lsgan_d_loss(zeros, ones)) == pytest.approx(1.0)
    assert float(lsgan_g_loss(ones)) == 0.0 and float(lsgan_g_loss(half)) == pytest.approx(0.25)


def test_cycle_and_identity_losses_vanish_for_identity_generators(pair):
    model = build(CycleGAN, pair)
    model.g_ab, model.g_ba = nn.Identity(), nn.Identity()
    x = pair.split("train")["x"][:32] * 2 - 1
    losses = model.generator_losses(x[:16], x[16:])
    assert float(losses["cycle"]) == 0.0 and float(losses["identity"]) == 0.0
    expected_adv = lsgan_g_loss(model.d_b(x[:16])) + lsgan_g_loss(model.d_a(x[16:]))
    assert torch.allclose(losses["adv"], expected_adv)
    assert torch.allclose(losses["g_loss"], losses["adv"])  # lambda terms add nothing
    # translate maps [0, 1] images through [-1, 1] and back
    assert torch.allclose(model.translate((x + 1) / 2, "original", "thick"), (x + 1) / 2, atol=1e-6)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic_and_nonnegative():
    torch.manual_seed(0)
    real, fake = torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)
    alpha = torch.rand(8, 1, 1, 1)
    w = torch.randn(64)
    w = w / w.norm()
    assert float(gradient_penalty(lambda v: v.flatten(1) @ w, real, fake, alpha)) == pytest.approx(0.0, abs=1e-10)
    assert float(gradient_penalty(lambda v: v.flatten(1) @ (3 * w), real, fake, alpha)) == pytest.approx(4.0, rel=1e-5)
    model = StarGAN(StarGAN.make_config({}), load_digits_pair().spec)
    gp = gradient_penalty(model.discriminator.critic, real, fake, alpha)
    assert float(gp.detach()) >= 0.0 and gp.requires_grad  # differentiable: it trains the critic


def test_stargan_discriminator_classifies_real_images_and_generator_the_fakes(four):
    model = build(StarGAN, four)
    batch = four.split("train")
    x, c_org = batch["x"][:16] * 2 - 1, batch["domain"][:16]
    c_trg = (c_org + 1) % 4
    torch.manual_seed(0)
    d = model.discriminator_losses(x, c_org, c_trg)
    _, logits = model.discriminator(x)
    assert torch.allclose(d["d_cls"], nn.functional.cross_entropy(logits, c_org))
    assert float(d["gp"].detach()) >= 0
    g = model.generator_losses(x, c_org, c_trg)
    _, fake_logits = model.discriminator(model.generate(x, c_trg))
    assert torch.allclose(g["g_cls"], nn.functional.cross_entropy(fake_logits, c_trg), atol=1e-6)
    cfg = model.config
    assert torch.allclose(g["g_loss"], g["g_adv"] + cfg.lambda_cls * g["g_cls"] + cfg.lambda_rec * g["g_rec"])


# --- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,dataset_name", [(CycleGAN, "pair"), (StarGAN, "four")])
def test_translations_and_samples_shapes_ranges_and_determinism(cls, dataset_name, request):
    ds = request.getfixturevalue(dataset_name)
    fresh = build(cls, ds)
    with pytest.raises(GenbenchError, match="train_step first"):
        fresh.sample(4)
    a = build(cls, ds, seed=3)  # seeds the global generator, as the runner does per trial
    train_steps(a, ds, 6, seed=3)
    b = build(cls, ds, seed=3)
    train_steps(b, ds, 6, seed=3)
    x = ds.split("test")["x"][:10]
    ta, tb = a.translate(x, 0, 1), b.translate(x, 0, 1)
    assert ta.shape == x.shape and torch.equal(ta, tb)
    assert torch.equal(a.translate(x, "original", ds.spec.extras["domain"]["names"][1]), ta)
    sa = a.sample(20, generator=torch.Generator().manual_seed(0))
    sb = b.sample(20, generator=torch.Generator().manual_seed(0))
    assert sa.shape == (20, 1, 8, 8) and torch.equal(sa, sb)
    assert 0 <= sa.min() and sa.max() <= 1 and 0 <= ta.min() and ta.max() <= 1
    with pytest.raises(GenbenchError, match="unknown domain"):
        a.translate(x, "original", "sideways")


def test_image_pool_returns_new_or_stored_images_and_round_trips(pair):
    from genbench_plugins.cyclegan import ImagePool

    torch.manual_seed(0)
    pool = ImagePool(3, (1, 8, 8))
    first = torch.rand(3, 1, 8, 8)
    assert torch.equal(pool.query(first), first)  # filling: every image passes through and is kept
    seen, from_history = list(first), 0
    for _ in range(5):
        new = torch.rand(4, 1, 8, 8)
        out = pool.query(new)
        for i, (image, fresh) in enumerate(zip(out, new)):  # the new image, or one stored before it
            assert torch.equal(image, fresh) or any(torch.equal(image, old) for old in [*seen, *new[:i]])
            from_history += not torch.equal(image, fresh)
        seen.extend(new)
    assert 0 < from_history < 20  # about half of the 20 come from the history
    model = build(CycleGAN, pair)
    train_steps(model, pair, 2)
    fresh = build(CycleGAN, pair, seed=1)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.pool_a.images, model.pool_a.images) and int(fresh.pool_b.count) == 50
    g = torch.Generator().manual_seed(0)
    assert torch.equal(fresh.sample(8, generator=g), model.sample(8, generator=torch.Generator().manual_seed(0)))


def test_cyclegan_training_reduces_the_cycle_loss(pair):
    model = build(CycleGAN, pair)
    history = []
    batch = {k: v[:64] for k, v in pair.split("train").items()}
    for _ in range(30):
        history.append(model.train_step(batch, 0.0)["cycle"])
    assert sum(history[-5:]) / 5 < 0.6 * sum(history[:5]) / 5


def test_stargan_runs_one_generator_update_per_n_critic_steps(four):
    model = build(StarGAN, four, n_critic=5)
    before = [p.detach().clone() for p in model.generator.parameters()]
    batch = {k: v[:16] for k, v in four.split("train").items()}
    for _ in range(4):
        model.train_step(batch, 0.0)
    assert all(torch.equal(p, q) for p, q in zip(before, model.generator.parameters()))
    losses = model.train_step(batch, 0.0)
    assert not all(torch.equal(p, q) for p, q in zip(before, model.generator.parameters()))
    assert {"d_loss", "gp", "d_cls", "g_loss", "g_rec", "g_cls"} <= set(losses)


# --- metrics --------------------------------------------------------------------------------------


def _oracle(dataset, split="test"):
    """A perfect translator: finds each input among every domain's version of the split's base
    images and returns the known transform of that base image into the target domain."""
    base = dataset.info["base"].split(split)["x"]
    names = dataset.spec.extras["domain"]["names"]
    table = torch.cat([DOMAINS[n].forward(base).flatten(1) for n in names])

    def translate(x, s, t):
        match = (x.flatten(1)[:, None, :] == table[None, :, :]).all(-1)
        assert match.any(1).all(), "the oracle only translates images of this split"
        rows = match.float().argmax(1) % len(base)
        return DOMAINS[names[t]].forward(base[rows])

    return translate


def test_identity_translation_has_zero_cycle_error_and_misses_the_target(four, classifiers):
    domain_ext, digit_ext = classifiers
    names = four.spec.extras["domain"]["names"]
    out = translation_scores(lambda x, s, t: x, four.split("test"), names, domain_ext, digit_ext)
    for name in names:
        assert out[f"cycle_error_{name}"] == 0.0
    assert out["cycle_error"] == 0.0
    assert out["target_accuracy"] < 0.05  # the images stay in their source domain


def test_oracle_translator_scores_near_the_classifiers_and_constant_scores_low(four, classifiers):
    domain_ext, digit_ext = classifiers
    names = four.spec.extras["domain"]["names"]
    test = four.split("test")
    base_x = four.info["base"].split("test")["x"]
    oracle = translation_scores(_oracle(four), test, names, domain_ext, digit_ext, base_x)
    assert oracle["target_accuracy"] == pytest.approx(domain_ext.heldout_accuracy, abs=0.03)
    assert oracle["target_accuracy"] > 0.9
    # a perfect translator reaches the ceiling, which is near the digit classifier's own accuracy
    assert oracle["label_preservation"] == pytest.approx(oracle["label_preservation_oracle"], abs=1e-9)
    assert oracle["label_preservation"] > digit_ext.heldout_accuracy - 0.12
    for name in ("original", "inverted", "rotated"):  # exact inverses lose nothing
        assert oracle[f"label_preservation_{name}"] == pytest.approx(digit_ext.heldout_accuracy, abs=0.05)
    assert oracle["cycle_error"] == 0.0

    gray = translation_scores(lambda x, s, t: torch.full_like(x, 0.5), test, names, domain_ext, digit_ext)
    assert gray["target_accuracy"] <= 0.25 + 1e-9  # one predicted domain for every image
    assert gray["label_preservation"] < 0.2  # one predicted digit for every image
    assert gray["cycle_error"] > 0.2
    assert gray["fid_target"] > 5 * oracle["fid_target"]


def test_translation_metric_applies_and_computes_every_column(four, pair, classifiers, monkeypatch, digits):
    from genbench_plugins.gan import GAN

    metric = TranslationMetrics()
    assert metric.applies(StarGAN, four)[0] and metric.applies(CycleGAN, pair)[0]
    assert not metric.applies(GAN, pair)[0]
    assert not metric.applies(StarGAN, digits)[0]
    domain_ext, digit_ext = classifiers
    # the metric's own classifiers are genbench's cached 80-epoch ones; the brief ones keep this fast
    monkeypatch.setattr(dom_mod, "domain_index_extractor", lambda dataset, device="cpu": domain_ext)
    monkeypatch.setattr(dom_mod, "digit_extractor", lambda dataset, device="cpu": digit_ext)
    model = build(StarGAN, four)
    train_steps(model, four, 5)
    ctx = EvalContext(model, four, get_profile("test"), seed=0, device="cpu")
    out = metric.compute(ctx)
    assert model.training  # the model is handed back in training mode
    for column in ("cycle_error", "target_accuracy", "label_preservation", "fid_target"):
        per_target = [out[f"{column}_{n}"] for n in ("original", "inverted", "rotated", "thick")]
        assert out[column] == pytest.approx(sum(per_target) / 4)
    for column in ("target_accuracy", "label_preservation", "label_preservation_oracle"):
        assert 0.0 <= out[column] <= 1.0
    assert out["domain_classifier_accuracy"] == domain_ext.heldout_accuracy
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
