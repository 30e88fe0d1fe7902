"""InfoGAN: the image mapping between data and the generator's tanh canvas, the codes drawn by
``sample``, and where the gradients of the mutual-information term go (into both G and Q)."""

import pytest
import torch
from conftest import build, train_steps
from torch import nn

from genbench_plugins.infogan import InfoGAN


def test_generator_draws_on_a_tanh_canvas_and_samples_map_back_to_data(digits):
    model = build(InfoGAN, digits)
    assert isinstance(list(model.generator.conv)[-1], nn.Tanh)
    x = digits.split("train")["x"][:32]
    canvas = model.to_canvas(x)
    assert float(canvas.min()) >= -1.0 and float(canvas.max()) <= 1.0
    assert float(canvas.min()) < -0.8  # the digits' dark background sits near -1, as tanh can reach
    assert torch.allclose(model.to_data(canvas), x, atol=1e-6)


def test_sample_draws_every_categorical_code_uniformly(digits):
    model = build(InfoGAN, digits)
    _, cat, _ = model.draw_codes(5000, torch.Generator().manual_seed(0))
    counts = torch.bincount(cat, minlength=model.n_categories).float()
    assert len(counts) == model.n_categories
    # 500 expected per code; a binomial's standard deviation is about 21
    assert float(counts.min()) > 400 and float(counts.max()) < 600


def test_generator_input_is_the_one_hot_code_that_q_predicts(digits):
    model = build(InfoGAN, digits)
    noise, cat, cont = model.draw_codes(8, torch.Generator().manual_seed(1))
    z = model.latent(noise, cat, cont)
    k, nd = model.n_categories, model.config.noise_dim
    one_hot = z[:, nd : nd + k]
    assert torch.equal(one_hot.argmax(1), cat) and torch.equal(one_hot.sum(1), torch.ones(8))
    assert torch.equal(z[:, :nd], noise) and torch.equal(z[:, nd + k :], cont)


def test_information_term_reaches_the_generator_and_q(digits):
    model = build(InfoGAN, digits)
    noise, cat, cont = model.draw_codes(64, torch.Generator().manual_seed(2))
    _, q = model.discriminator(model.generator(model.latent(noise, cat, cont)))
    cat_ll, _ = model.info_loglik(q, cat, cont)
    (-cat_ll).backward()
    g_first = model.generator.fc[0].weight.grad
    q_last = model.discriminator.q_head[-1].weight.grad
    assert g_first is not None and float(g_first.abs().sum()) > 0
    assert q_last is not None and float(q_last.abs().sum()) > 0
    assert model.discriminator.d_head.weight.grad is None  # D's logit plays no part in L_I


def test_noise_alone_varies_the_images_of_one_code(digits):
    model = build(InfoGAN, digits)
    train_steps(model, digits, 3)
    model.eval()
    noise, cat, cont = model.draw_codes(16, torch.Generator().manual_seed(3), torch.full((16,), 4))
    other, _, _ = model.draw_codes(16, torch.Generator().manual_seed(4), torch.full((16,), 4))
    with torch.no_grad():
        x = model.to_data(model.generator(model.latent(noise, cat, cont)))
        same = model.to_data(model.generator(model.latent(noise, cat, cont)))
        y = model.to_data(model.generator(model.latent(other, cat, cont)))
    assert torch.equal(x, same)
    # same categorical and continuous codes, different incompressible noise: different images
    assert float((x - y).abs().amax(dim=(1, 2, 3)).min()) > 1e-4


@pytest.mark.parametrize("lr", [{"lr_d": 3e-4, "lr_g": 7e-4}])
def test_learning_rates_reach_the_optimisers(digits, lr):
    model = build(InfoGAN, digits, **lr)
    assert model.optimizers["d"].param_groups[0]["lr"] == lr["lr_d"]
    assert model.optimizers["g"].param_groups[0]["lr"] == lr["lr_g"]
