"""Budgets: parsing, accounting of seconds / steps / FLOPs, honouring a time limit, the FLOP counter
kept off the clock; and what the training loop adds to each step besides the model's own work
(losses read only when needed, the fused optimiser, distributions without argument checks)."""

import dataclasses

import pytest
import torch

from genbench.budget import Budget, BudgetMeter
from genbench.errors import BudgetError
from genbench.model import GenerativeModel


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



# --- the FLOP counter is kept off the budget's clock ---------------------------------------------

FLOPS_PER_STEP = 1000.0


class FakeSteps:
    """The budget's clocks (``process_time`` and ``perf_counter``) and a FLOP counter standing in
    for the real ones: ``run()`` is a step that advances the clocks by ``cost`` seconds, or by
    ``counter_factor`` times that while the counter is on (the counter's overhead); every counted
    step counts FLOPS_PER_STEP."""

    def __init__(self, cost: float = 1.0, counter_factor: float = 5.0):
        self.now, self.cost, self.counter_factor = 0.0, cost, counter_factor
        self.counting = False
        self.measured: list[float] = []  # what each step took on the clock

    def process_time(self):
        return self.now

    def perf_counter(self):
        return self.now

    def run(self):
        took = self.cost * (self.counter_factor if self.counting else 1.0)
        self.now += took
        self.measured.append(took)


@pytest.fixture()
def fake(monkeypatch):
    import genbench.budget as budget_module

    steps = FakeSteps()

    class FakeCounter:
        def __init__(self, **kwargs):
            pass

        def __enter__(self):
            steps.counting = True
            return self

        def __exit__(self, *exc):
            steps.counting = False
            return False

        def get_total_flops(self):
            return FLOPS_PER_STEP

    monkeypatch.setattr(budget_module, "time", steps)
    monkeypatch.setattr(budget_module, "TotalFlopCounter", FakeCounter)
    return steps


def run_meter(meter: BudgetMeter, fake: FakeSteps, cost=lambda step: 1.0) -> list[float]:
    """Run ``meter`` to its end with steps of ``cost(step)`` seconds; the seconds charged to each."""
    charged = []
    while not meter.exhausted():
        fake.cost = cost(meter.usage.steps)
        before = meter.usage.seconds
        with meter.step():
            fake.run()
        charged.append(meter.usage.seconds - before)
    meter.finish()
    return charged


def test_counted_steps_are_charged_the_time_of_uncounted_steps(fake):
    """Under a step budget steps 0, 100 and 200 are counted, each 5x slower on the clock; the
    budget's clock reads what 250 uncounted steps take, not that plus 3 * 4 s of counting."""
    meter = BudgetMeter(Budget.parse("250steps"), flop_sample_every=100)
    run_meter(meter, fake)
    usage = meter.usage
    assert sum(fake.measured) == pytest.approx(250 + 3 * 4)  # the counter did slow those steps
    assert usage.steps == 250
    assert usage.seconds == pytest.approx(250.0) and usage.wall_seconds == pytest.approx(250.0)
    assert usage.flops == pytest.approx(250 * FLOPS_PER_STEP) and not usage.flops_exact


def test_a_counted_step_is_charged_the_mean_of_the_uncounted_steps_since_the_last_count(fake):
    """Steps 1-4 take 1 s, 5-7 take 2 s and 8-11 take 4 s (a model whose steps grow); steps 0, 5
    and 10 are counted."""
    meter = BudgetMeter(Budget.parse("12steps"), flop_sample_every=5)
    charged = run_meter(meter, fake, cost=lambda step: 1.0 if step < 5 else 2.0 if step < 8 else 4.0)
    assert charged[5] == pytest.approx(1.0)  # mean of steps 1-4
    assert charged[10] == pytest.approx((2 * 2.0 + 2 * 4.0) / 4)  # mean of steps 6-9
    assert [charged[i] for i in (6, 7, 8, 11)] == [2.0, 2.0, 4.0, 4.0]  # uncounted: their own time


def test_the_first_step_is_charged_with_the_next_uncounted_one(fake):
    """A seconds budget: the first step (counted, and slow) reads as no progress until the next
    uncounted step, whose time both are charged; progress never goes back, and the budget buys
    as many uncounted steps as it holds."""
    meter = BudgetMeter(Budget.parse("10s"), flop_sample_every=100)
    progress = []
    while not meter.exhausted():
        progress.append(meter.progress())
        with meter.step():
            fake.run()
    usage = meter.finish()
    assert progress[:3] == [0.0, 0.0, pytest.approx(0.2)]
    assert progress == sorted(progress)
    assert usage.steps == 10 and usage.seconds == pytest.approx(10.0) and usage.overrun == 0.0


def test_a_run_with_no_uncounted_step_is_charged_its_measured_time(fake):
    meter = BudgetMeter(Budget.parse("1step"))
    run_meter(meter, fake)
    assert meter.usage.steps == 1 and meter.usage.seconds == pytest.approx(5.0)


def test_under_a_flop_budget_every_step_is_counted_and_charged_its_time(fake):
    meter = BudgetMeter(Budget.parse(f"{4 * FLOPS_PER_STEP}flop"))
    charged = run_meter(meter, fake)
    usage = meter.usage
    assert usage.steps == 4 and usage.flops == 4 * FLOPS_PER_STEP and usage.flops_exact
    assert charged == [5.0] * 4 and usage.seconds == pytest.approx(20.0)


# --- the training loop's work around a step ---------------------------------------------------------

def test_adam_is_fused_where_torch_has_the_kernel_and_keeps_the_hyper_parameters():
    from genbench.optim import adam

    torch.manual_seed(0)
    w = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    twin = [torch.nn.Parameter(p.detach().clone()) for p in w]
    ours = adam(w, 1e-2, betas=(0.5, 0.99), eps=1e-6, weight_decay=1e-3)
    plain = torch.optim.Adam(twin, lr=1e-2, betas=(0.5, 0.99), eps=1e-6, weight_decay=1e-3)
    assert ours.defaults["fused"] is True
    assert {k: ours.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad")} == \
        {k: plain.defaults[k] for k in ("lr", "betas", "eps", "weight_decay", "amsgrad")}
    for _ in range(3):  # the same algorithm: the same parameters after a few steps
        for params, opt in ((w, ours), (twin, plain)):
            opt.zero_grad()
            (params[0].sum(0) * params[1]).pow(2).sum().backward()
            opt.step()
    for a, b in zip(w, twin):
        torch.testing.assert_close(a, b)
    # param groups with their own settings are accepted as torch.optim.Adam accepts them
    groups = adam([{"params": [w[0]], "weight_decay": 0.1}, {"params": w[1]}], 1e-3)
    assert [g["weight_decay"] for g in groups.param_groups] == [0.1, 0.0] and groups.defaults["fused"]
    # a device without the fused kernel gets the multi-tensor one
    meta = adam([torch.nn.Parameter(torch.zeros(3, device="meta"))], 1e-3)
    assert meta.defaults["foreach"] is True and not meta.defaults["fused"]


@dataclasses.dataclass
class LoopConfig:
    batch_size: int = 8
    nan_at: int = 0  # the step (1-based) whose loss is NaN; 0 = none
    raise_at: int = 0  # the step that raises; 0 = none


class TensorLosses(GenerativeModel):
    """Returns its loss as a detached 0-dim tensor; builds a distribution whose scale breaks its
    constraint, which only torch's argument checks would refuse."""

    name = "tensor-losses"
    Config = LoopConfig

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.loc = torch.nn.Parameter(torch.zeros(spec.dim))
        self.optimizers = {"sgd": torch.optim.SGD(self.parameters(), lr=0.1)}
        self.steps = 0

    def train_step(self, batch, progress):
        self.steps += 1
        torch.distributions.Normal(self.loc, -torch.ones_like(self.loc))  # unchecked inside the loop
        loss = ((batch["x"] - self.loc) ** 2).mean()
        opt = self.optimizers["sgd"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        if self.steps == self.config.raise_at:
            raise RuntimeError("a later failure")
        if self.steps == self.config.nan_at:
            loss = loss * float("nan")
        return {"loss": loss.detach()}


def test_tensor_losses_reach_the_callback_as_returned_and_the_record_as_floats(ring8):
    from genbench.runner import train

    model = TensorLosses(LoopConfig(), ring8.spec)
    seen = []
    usage, losses = train(model, ring8, Budget.parse("7steps"), 0, "cpu",
                          on_step=lambda progress, step_losses: seen.append(step_losses["loss"]))
    assert usage.steps == 7 and len(seen) == 7
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in seen)
    assert isinstance(losses["loss"], float) and losses["loss"] == float(seen[-1])
    with pytest.raises(ValueError):  # the checks are back on outside the loop
        torch.distributions.Normal(torch.zeros(2), -torch.ones(2))


@pytest.mark.parametrize("raise_at", [0, 9])
def test_a_non_finite_tensor_loss_fails_training_naming_its_step(ring8, raise_at):
    """Read later than it was returned, a NaN loss still names its own step, and it is the reason
    even where a later step then raises."""
    from genbench.errors import NonFiniteLossError
    from genbench.runner import train

    model = TensorLosses(LoopConfig(nan_at=3, raise_at=raise_at), ring8.spec)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3: {'loss': nan}"):
        train(model, ring8, Budget.parse("200steps"), 0, "cpu")
    assert 3 <= model.steps < 200
