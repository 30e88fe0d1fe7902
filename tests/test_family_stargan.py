"""StarGAN's own generator: shapes, conditioning, where it normalises, the size check and a short
reconstruction run."""

import pytest
import torch
from conftest import build

from genbench.errors import GenbenchError
from genbench_plugins.stargan import StarGAN, StarGenerator, StarResidualBlock


@pytest.mark.parametrize("n_down", [0, 1, 2])
@pytest.mark.parametrize("outer_kernel", [3, 7])
def test_generator_keeps_the_image_shape_at_every_depth(n_down, outer_kernel):
    g = StarGenerator(5, 1, 8, n_down, 1, outer_kernel)
    out = g(torch.randn(3, 5, 8, 8))
    assert out.shape == (3, 1, 8, 8)
    assert out.abs().max() <= 1
    strided = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == n_down
    outer = [m for m in g.modules() if isinstance(m, torch.nn.Conv2d)]
    assert outer[0].kernel_size == outer[-1].kernel_size == (outer_kernel, outer_kernel)


def test_generator_output_depends_on_the_target_domain_and_on_the_image(four):
    model = build(StarGAN, four)
    x = four.split("test")["x"][:8]
    for t in range(1, 4):
        assert not torch.allclose(model.translate(x, 0, 0), model.translate(x, 0, t))
    assert not torch.allclose(model.translate(x[:4], 0, 1), model.translate(x[4:], 0, 1))


def test_generator_too_deep_for_the_image_is_refused(four):
    with pytest.raises(GenbenchError, match="divisible by 16"):
        build(StarGAN, four, n_down=4)
    with pytest.raises(GenbenchError, match="outer_kernel"):
        build(StarGAN, four, outer_kernel=4)


def test_training_lowers_the_reconstruction_loss(four):
    model = build(StarGAN, four, n_critic=1)
    data = four.split("train")
    torch.manual_seed(0)
    history = []
    for _ in range(60):
        idx = torch.randint(len(data["x"]), (16,))
        losses = model.train_step({k: v[idx] for k, v in data.items()}, 0.0)
        history.append(losses["g_rec"])
    assert sum(history[-10:]) / 10 < 0.8 * sum(history[:10]) / 10


def _norms(g):
    """(convolutions followed by an instance norm, those that are not), outside the residual blocks."""
    layers = list(g.net)
    convs = [i for i, m in enumerate(layers) if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    normed = [i for i in convs if isinstance(layers[i + 1], torch.nn.InstanceNorm2d)]
    return normed, [i for i in convs if i not in normed]


def test_norm_places_instance_normalisation_where_it_says():
    for norm, normed_stages in [("all", 3), ("skip-first", 2), ("residual", 0)]:
        g = StarGenerator(5, 1, 8, 1, 2, 3, norm=norm)
        normed, plain = _norms(g)
        assert len(normed) == normed_stages
        assert len(plain) == 4 - normed_stages  # the last convolution is never normalised
        # a convolution carries a bias exactly where no normalisation follows it
        assert all(g.net[i].bias is None for i in normed)
        assert all(g.net[i].bias is not None for i in plain[:-1])
        blocks = [m for m in g.modules() if isinstance(m, StarResidualBlock)]
        assert len(blocks) == 2
        assert all(sum(isinstance(m, torch.nn.InstanceNorm2d) for m in b.modules()) == 2 for b in blocks)
    with pytest.raises(GenbenchError, match="norm must be one of"):
        StarGenerator(5, 1, 8, 1, 2, 3, norm="batch")


def test_an_instance_norm_after_the_first_convolution_weakens_the_target_code(four):
    """The one-hot channels are constant over the image, so the first convolution turns them into a
    per-channel constant away from the borders, which an instance norm right after it subtracts:
    at initialisation the target moves G's output less, relative to the image, with it than without."""
    x, x2 = four.split("test")["x"][:128].mul(2).sub(1).chunk(2)
    t = torch.arange(64) % 4

    def target_over_image(norm, seed):
        model = build(StarGAN, four, seed=seed, norm=norm)
        with torch.no_grad():
            base = model.generate(x, t)
            by_target = (model.generate(x, (t + 1) % 4) - base).abs().mean()
            by_image = (model.generate(x2, t) - base).abs().mean()
        return float(by_target / by_image)

    for seed in range(3):
        assert target_over_image("residual", seed) > 1.2 * target_over_image("all", seed)
