"""StarGAN's own generator: shapes, conditioning, the size check and a short reconstruction run."""

import pytest
import torch
from conftest import build

from genbench.errors import GenbenchError
from genbench_plugins.stargan import StarGAN, StarGenerator


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
