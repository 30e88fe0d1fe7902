"""Throughput of the likelihood estimators on digits' test split: batched over data points (as the
metrics run them) against a naive loop over points, measured in the same run.

`pytest tests/benchmarks --benchmark-enable` times the batched estimators with pytest-benchmark;
under the default `--benchmark-disable` each runs once as a plain test.  Either way the naive loop
is timed once beside the batched call and the ratio is printed and stored in ``extra_info``.
"""

import time

import pytest
import torch
from conftest import trained_vae_and_points

from genbench.metrics.ais import AISSettings, ais_log_likelihood
from genbench.metrics.likelihood import elbo_and_iwae

N_POINTS = 20
IWAE_K = 5000
AIS = AISSettings(steps=30, chains=4, leapfrog=3)


@pytest.fixture(scope="module")
def vae_and_points(manager, digits):
    return trained_vae_and_points(manager, digits, N_POINTS)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _report(benchmark, name, batched_s, naive_s):
    ratio = naive_s / batched_s
    benchmark.extra_info.update({
        "points": N_POINTS, "batched_points_per_s": N_POINTS / batched_s,
        "naive_points_per_s": N_POINTS / naive_s, "speedup_vs_naive_loop": ratio,
    })
    print(f"\n{name}: batched {N_POINTS / batched_s:.1f} points/s, naive per-point loop "
          f"{N_POINTS / naive_s:.1f} points/s, speed-up x{ratio:.1f}")
    return ratio


def test_iwae_throughput(benchmark, vae_and_points):
    model, x = vae_and_points

    def batched():
        torch.manual_seed(0)
        return elbo_and_iwae(model, x, IWAE_K)[1]

    def naive():
        torch.manual_seed(0)
        return torch.cat([elbo_and_iwae(model, xi.unsqueeze(0), IWAE_K, chunk_rows=IWAE_K)[1] for xi in x])

    iwae = benchmark.pedantic(batched, rounds=3, iterations=1)
    (_, batched_s), (iwae_naive, naive_s) = _timed(batched), _timed(naive)
    # the same estimator either way: equal up to Monte Carlo noise of K=5000 samples
    assert torch.allclose(iwae, iwae_naive, atol=0.5)
    _report(benchmark, f"IWAE K={IWAE_K}", batched_s, naive_s)


def test_ais_throughput(benchmark, vae_and_points):
    model, x = vae_and_points

    def batched():
        torch.manual_seed(0)
        return ais_log_likelihood(model, x, AIS).log_px

    def naive():
        torch.manual_seed(0)
        return torch.cat([ais_log_likelihood(model, xi.unsqueeze(0), AIS).log_px for xi in x])

    ais = benchmark.pedantic(batched, rounds=2, iterations=1)
    (_, batched_s), (ais_naive, naive_s) = _timed(batched), _timed(naive)
    assert torch.isfinite(ais).all() and torch.isfinite(ais_naive).all()
    ratio = _report(benchmark, f"AIS T={AIS.steps} x{AIS.chains} chains", batched_s, naive_s)
    assert ratio > 2, "batching the chains of many points must beat a loop over points"
