"""Budgets: parsing, accounting of seconds / steps / FLOPs, honouring a time limit."""

import pytest
import torch

from genbench.budget import Budget, BudgetMeter
from genbench.errors import BudgetError


@pytest.mark.parametrize(
    "text, kind, amount",
    [("30s", "seconds", 30), ("10m", "seconds", 600), ("1h", "seconds", 3600), ("2.5s", "seconds", 2.5),
     ("2000steps", "steps", 2000), ("1step", "steps", 1), ("1e12flop", "flops", 1e12), ("3e9flops", "flops", 3e9)],
)
def test_parse(text, kind, amount):
    b = Budget.parse(text)
    assert (b.kind, b.amount) == (kind, amount)


@pytest.mark.parametrize("text", ["", "30", "ten s", "5 parsecs", "-3s", "0steps", "1.5steps", "1e12"])
def test_bad_budget_shows_accepted_forms(text):
    with pytest.raises(BudgetError) as err:
        Budget.parse(text)
    assert "30s" in str(err.value) and "2000steps" in str(err.value) and "1e12flop" in str(err.value)


def test_step_budget_counts_steps_and_flops():
    lin = torch.nn.Linear(10, 20)
    x = torch.randn(8, 10)
    meter = BudgetMeter(Budget.parse("7steps"), flop_sample_every=3)
    while not meter.exhausted():
        with meter.step():
            lin(x).sum().backward()
    usage = meter.finish()
    assert usage.steps == 7
    # forward matmul 2*8*10*20 plus the backward matmul for the weight gradient (the input needs none)
    per_step = 2 * 2 * 8 * 10 * 20
    assert usage.flops == pytest.approx(7 * per_step)
    assert usage.flops_exact is False


def test_flop_budget_counts_every_step_and_stops():
    lin = torch.nn.Linear(10, 20)
    x = torch.randn(8, 10)
    per_step = 2 * 2 * 8 * 10 * 20
    meter = BudgetMeter(Budget.parse(f"{per_step * 5}flop"))
    while not meter.exhausted():
        with meter.step():
            lin(x).sum().backward()
    usage = meter.finish()
    assert usage.steps == 5 and usage.flops_exact
    assert usage.flops == pytest.approx(5 * per_step)


def test_time_budget_is_honoured_within_5_percent():
    meter = BudgetMeter(Budget.parse("2s"))
    a = torch.randn(32, 32)
    while not meter.exhausted():
        with meter.step():
            a = torch.tanh(a @ a)
    usage = meter.finish()
    assert 2.0 <= usage.seconds <= 2.0 * 1.05
    assert usage.overrun == pytest.approx(usage.seconds / 2.0 - 1)
    assert usage.steps > 10


def test_flops_are_counted_through_a_gradient_penalty():
    """Steps that differentiate w.r.t. a leaf input (WGAN-GP) must be countable."""
    critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    meter = BudgetMeter(Budget.parse("2steps"))
    while not meter.exhausted():
        with meter.step():
            x = torch.randn(5, 4, requires_grad=True)
            (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
            ((grad.norm(dim=1) - 1) ** 2).mean().backward()
    usage = meter.finish()
    assert usage.steps == 2 and usage.flops > 2 * (2 * 5 * 4 * 8 + 2 * 5 * 8)


def test_time_budget_counts_compute_not_waiting():
    """A seconds budget is the trial's CPU time: time spent waiting (here: sleeping, as a process
    does when other work holds the cores) is wall time, recorded beside it but not charged."""
    import time

    meter = BudgetMeter(Budget.parse("0.3s"))
    a = torch.randn(64, 64)
    slept = 0.0
    while not meter.exhausted():
        with meter.step():
            a = torch.tanh(a @ a)
            time.sleep(0.01)
        slept += 0.01
    usage = meter.finish()
    assert usage.clock == "cpu process time"
    assert usage.seconds >= 0.3
    assert usage.wall_seconds >= usage.seconds + 0.8 * slept
    assert usage.steps >= 10
