"""The progressive GAN's budget schedule with a longer last stage, its non-growing setting, and
sampling from the running average of the generator's weights."""

import pytest
import torch
from conftest import build, train_steps

from genbench.errors import GenbenchError
from genbench_plugins.progan import ProGAN, schedule


def test_the_last_stage_gets_its_share_and_the_earlier_ones_split_the_rest():
    # 3 stages, last share 1/2: stages 0 and 1 get 1/4 each, stage 1 fades in over 1/8
    assert schedule(0.2, 3, 0.5, 0.5) == (0, 1.0)
    assert schedule(0.25, 3, 0.5, 0.5) == (1, pytest.approx(0.0))
    assert schedule(0.25 + 1 / 16, 3, 0.5, 0.5) == (1, pytest.approx(0.5))
    assert schedule(0.45, 3, 0.5, 0.5) == (1, 1.0)
    # the last stage fades in over the same 1/8 and then trains to the end of the budget
    assert schedule(0.5, 3, 0.5, 0.5) == (2, pytest.approx(0.0))
    assert schedule(0.5 + 1 / 16, 3, 0.5, 0.5) == (2, pytest.approx(0.5))
    assert schedule(0.7, 3, 0.5, 0.5) == (2, 1.0) and schedule(1.0, 3, 0.5, 0.5) == (2, 1.0)


def test_an_equal_last_share_is_the_equal_schedule():
    for p in (torch.linspace(0, 1, 37) + 0.01).clamp(max=1).tolist():
        assert schedule(p, 3, 0.5, 1 / 3) == pytest.approx(schedule(p, 3, 0.5))


def test_last_share_1_trains_the_full_network_from_the_start(digits):
    assert schedule(0.0, 3, 0.5, 1.0) == (2, 1.0)
    model = build(ProGAN, digits, last_share=1.0)
    losses = model.train_step({"x": digits.split("train")["x"][:16]}, 0.0)
    assert losses["stage"] == 2 and losses["alpha"] == 1.0 and int(model.stage) == 2


@pytest.mark.parametrize("key,value", [("last_share", 0.0), ("last_share", 1.5), ("ema_decay", 1.0),
                                       ("ema_decay", -0.1)])
def test_rejects_shares_and_decays_out_of_range(digits, key, value):
    with pytest.raises(GenbenchError, match=f"{key}={value}"):
        build(ProGAN, digits, **{key: value})


def test_the_running_average_follows_the_generator(digits):
    model = build(ProGAN, digits, ema_decay=0.9)
    before = [p.clone() for p in model.generator_ema.parameters()]
    train_steps(model, digits, 2)
    live = list(model.generator.parameters())
    avg = list(model.generator_ema.parameters())
    assert all(not p.requires_grad for p in avg)
    moved = [not torch.equal(a, b) for a, b in zip(avg, before)]
    assert any(moved)
    # with a decay above 0 the average lags behind the live weights
    assert any(not torch.allclose(a, g) for a, g in zip(avg, live))
    plain = build(ProGAN, digits, ema_decay=0.0)
    train_steps(plain, digits, 2)
    assert all(torch.equal(a, g) for a, g in zip(plain.generator_ema.parameters(), plain.generator.parameters()))


def test_samples_come_from_the_average_and_it_is_saved_with_the_model(digits):
    model = build(ProGAN, digits)
    train_steps(model, digits, 2)
    model.eval()

    def draw():
        with torch.no_grad():
            return model.sample(8, generator=torch.Generator().manual_seed(0))

    first = draw()
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    assert torch.equal(draw(), first)  # the live generator is not what samples
    with torch.no_grad():
        for p in model.generator_ema.parameters():
            p.mul_(0.5)
    assert not torch.equal(draw(), first)
    assert any(k.startswith("generator_ema.") for k in model.state_dict())


def test_the_critic_takes_n_critic_steps_per_generator_step(digits):
    model = build(ProGAN, digits, n_critic=3)
    batch = {"x": digits.split("train")["x"][:16]}
    for _ in range(2):
        model.train_step(batch, 0.0)

    def steps(opt):
        return {int(s["step"]) for s in model.optimizers[opt].state.values()}

    assert steps("d") == {6} and steps("g") == {2}
