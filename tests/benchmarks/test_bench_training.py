"""Training throughput: genbench's VAE and DCGAN trained through genbench's own loop
(``genbench.runner.train`` under a step budget) against the loop a user writes by hand for the same
model: the same architecture, batch size, data and hyper-parameters, the default
``torch.optim.Adam``, ``torch.distributions`` with their default argument checks, and ``.item()``
on every loss every step.  One torch thread, measured side by side in the same run.

`pytest tests/benchmarks --benchmark-enable` times genbench's loop with pytest-benchmark; under the
default `--benchmark-disable` each side runs once, a few steps, as a plain test.  Either way the two
loops are then timed in alternation, in CPU time of this process (one thread: the time the loop
itself ran, as genbench's budgets count it, so other work on a shared machine does not land on one
side only), and the ratio of steps per CPU second (genbench / by hand, from the median round of
each) is printed and stored in ``extra_info``.  The ratio is reported, not asserted.
"""

import math
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from conftest import build
from torch.distributions import Independent, Normal, kl_divergence

from genbench.budget import Budget
from genbench.nn import mlp
from genbench.runner import train
from genbench.toolkit import DCGANDiscriminator, DCGANGenerator, dcgan_init

STEPS = 300  # per timed run with --benchmark-enable
QUICK_STEPS = 5  # per run under --benchmark-disable (the default): a plain test
ROUNDS = 7  # alternating rounds of the two loops for the ratio


def _dequantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    return x + (torch.rand_like(x) - 0.5) / levels


def _batches(x: torch.Tensor, batch_size: int, seed: int):
    """Shuffled minibatches, epoch after epoch, as a hand-written loop draws them."""
    g = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            yield x[order[i : i + batch_size]]


class HandVAE(torch.nn.Module):
    """genbench's VAE (Gaussian MLP encoder and decoder, standard normal prior, analytic KL) as a
    user writes it."""

    def __init__(self, d: int, latent: int, hidden: int, image_shape: tuple[int, ...]):
        super().__init__()
        self.latent, self.shape = latent, image_shape
        self.encoder = mlp([d, hidden, hidden, 2 * latent], act=torch.nn.Tanh)
        self.decoder = mlp([latent, hidden, hidden, 2 * d], act=torch.nn.Tanh)

    def loss(self, x: torch.Tensor):
        mu, log_sigma = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        q = Independent(Normal(mu, log_sigma.clamp(-10, 5).exp()), 1)
        z = q.rsample()
        mean, log_scale = self.decoder(z).chunk(2, dim=-1)
        mean, log_scale = torch.sigmoid(mean).reshape(x.shape), log_scale.clamp(-6.0, 3.0).reshape(x.shape)
        rec = Independent(Normal(mean, log_scale.exp()), len(self.shape)).log_prob(x)
        zeros = torch.zeros(self.latent)
        kl = kl_divergence(q, Independent(Normal(zeros, torch.ones_like(zeros)), 1))
        return -(rec - kl).mean(), rec, kl


def hand_vae_loop(model: HandVAE, x: torch.Tensor, levels: int, steps: int, batch_size: int, lr: float):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    batches = _batches(x, batch_size, seed=0)
    for _ in range(steps):
        loss, rec, kl = model.loss(_dequantize(next(batches), levels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses = {"loss": loss.item(), "rec": -rec.mean().item(), "kl": kl.mean().item()}
    return losses


def hand_dcgan_loop(g: torch.nn.Module, d: torch.nn.Module, x: torch.Tensor, levels: int, steps: int,
                    batch_size: int, latent: int, lr: float, beta1: float):
    """The DCGAN step as a user writes it (8x8 digits fill the 8x8 canvas: no padding)."""
    opt_g = torch.optim.Adam(g.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=lr, betas=(beta1, 0.999))
    g.train()
    d.train()
    batches = _batches(x, batch_size, seed=0)
    for _ in range(steps):
        real = _dequantize(next(batches), levels) * 2 - 1
        fake = g(torch.randn(len(real), latent))
        out_real, out_fake = d(real), d(fake.detach())
        d_loss = (F.binary_cross_entropy_with_logits(out_real, torch.ones_like(out_real))
                  + F.binary_cross_entropy_with_logits(out_fake, torch.zeros_like(out_fake)))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        out = d(fake)
        g_loss = F.binary_cross_entropy_with_logits(out, torch.ones_like(out))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        losses = {"d_loss": d_loss.item(), "g_loss": g_loss.item()}
    return losses


def _cpu_timed(fn):
    start = time.process_time()
    out = fn()
    return out, time.process_time() - start


def _compare(benchmark, name: str, genbench_run, hand_run, steps: int) -> float:
    """Time genbench's loop with pytest-benchmark, then both loops in alternation; report the ratio
    of steps per CPU second from the median round of each."""
    benchmark.pedantic(genbench_run, rounds=3, iterations=1, warmup_rounds=1)
    rounds = ROUNDS if not benchmark.disabled else 1
    ours, theirs = [], []
    for _ in range(rounds):
        (_, losses), s = _cpu_timed(genbench_run)
        ours.append(s)
        hand_losses, s = _cpu_timed(hand_run)
        theirs.append(s)
        assert losses and all(math.isfinite(v) for v in losses.values())
        assert hand_losses and all(math.isfinite(v) for v in hand_losses.values())
    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    ratio = theirs_s / ours_s  # (steps / ours_s) / (steps / theirs_s)
    benchmark.extra_info.update({
        "steps": steps, "rounds": rounds, "genbench_steps_per_cpu_s": steps / ours_s,
        "hand_written_steps_per_cpu_s": steps / theirs_s, "speedup_vs_hand_written": ratio,
    })
    print(f"\n{name}: genbench {steps / ours_s:.1f} steps per CPU second, hand-written loop "
          f"{steps / theirs_s:.1f}, ratio x{ratio:.2f} (median of {rounds} alternating rounds of {steps} steps, "
          "1 thread)")
    return ratio


@pytest.fixture()
def steps(benchmark, one_thread_per_test):
    return QUICK_STEPS if benchmark.disabled else STEPS


def test_vae_training_throughput(benchmark, manager, digits, steps):
    cls = manager.models.get("vae")
    cfg = cls.make_config({})
    x = digits.split("train")["x"]
    budget = Budget.parse(f"{steps}steps")

    def genbench_run():
        return train(build(cls, digits), digits, budget, seed=0, device="cpu")

    def hand_run():
        torch.manual_seed(0)
        model = HandVAE(digits.spec.dim, 16, cfg.hidden, digits.spec.shape)
        return hand_vae_loop(model, x, digits.spec.levels, steps, cfg.batch_size, cfg.lr)

    ours = build(cls, digits)
    theirs = HandVAE(digits.spec.dim, ours.latent_dim, cfg.hidden, digits.spec.shape)
    # the same network on both sides
    assert [p.shape for p in ours.parameters()] == [p.shape for p in theirs.parameters()]
    _compare(benchmark, "VAE on digits", genbench_run, hand_run, steps)


def test_dcgan_training_throughput(benchmark, manager, digits, steps):
    cls = manager.models.get("dcgan")
    cfg = cls.make_config({})
    x = digits.split("train")["x"]
    budget = Budget.parse(f"{steps}steps")
    size = build(cls, digits).size
    assert size == digits.spec.shape[-1]  # the hand-written loop needs no canvas padding

    def genbench_run():
        return train(build(cls, digits), digits, budget, seed=0, device="cpu")

    def networks():
        torch.manual_seed(0)
        g = DCGANGenerator(cfg.latent_dim, digits.spec.shape[0], size, cfg.width)
        d = DCGANDiscriminator(digits.spec.shape[0], size, cfg.width)
        dcgan_init(g, cfg.init_std)
        dcgan_init(d, cfg.init_std)
        return g, d

    def hand_run():
        g, d = networks()
        return hand_dcgan_loop(g, d, x, digits.spec.levels, steps, cfg.batch_size, cfg.latent_dim, cfg.lr,
                               cfg.beta1)

    ours, (g, d) = build(cls, digits), networks()
    assert [p.shape for p in ours.parameters()] == [p.shape for p in [*g.parameters(), *d.parameters()]]
    _compare(benchmark, "DCGAN on digits", genbench_run, hand_run, steps)
