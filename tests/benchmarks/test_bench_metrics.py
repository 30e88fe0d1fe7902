"""Cost of the evaluation's expensive steps against a plain vectorised reference on the same model and
points, measured side by side in one session and reported as a ratio in ``extra_info``:

* the observation-sigma choice of a GAN: every sigma of the quick grid read off one annealing path
  (``select_obs_sigma``) against one AIS run per sigma, all sigmas in one batch (what it replaced);
* the IWAE bound with K = 1000 (``iwae_bounds``, with ELBO and effective sample size) against a
  [K, points] tensor of log weights decoded in row chunks and reduced by one logsumexp;
* KID (torch-fidelity, NumPy) with NumPy's BLAS held to torch's thread count (as evaluation runs it,
  ``library_threads``) against OpenBLAS's own choice of one thread per core.

`pytest tests/benchmarks --benchmark-enable` times the genbench side with pytest-benchmark; under
the default `--benchmark-disable` each runs once as a plain test.  Either way both sides are timed
in turn (best of a few rounds each) and the ratio is printed and stored.
"""

import math
import os
import time

import pytest
import torch
from conftest import build, train_steps, trained_vae_and_points

from genbench.metrics import library_threads
from genbench.metrics.ais import AISLikelihood, AISSettings, ais_log_likelihood, select_obs_sigma
from genbench.metrics.likelihood import iwae_bounds
from genbench.profiles import get_profile

QUICK = get_profile("quick")
QUICK_AIS = AISLikelihood.settings(QUICK)
SIGMA_AIS = AISSettings(steps=50, chains=QUICK_AIS.chains, leapfrog=QUICK_AIS.leapfrog)  # the ratio is T's for any T
IWAE_K, IWAE_POINTS = QUICK.iwae_k, 50


def _side_by_side(ours, reference, rounds=5):
    """(our output, our best seconds), (the reference's output, its best seconds), the two run in
    turn so that a busy moment of a shared machine falls on both alike."""
    best, out = [math.inf, math.inf], [None, None]
    for _ in range(rounds):
        for i, fn in enumerate((ours, reference)):
            start = time.perf_counter()
            out[i] = fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return (out[0], best[0]), (out[1], best[1])


def _report(benchmark, name, genbench_s, reference_s, **extra):
    ratio = genbench_s / reference_s
    benchmark.extra_info.update({"genbench_s": genbench_s, "reference_s": reference_s,
                                 "time_ratio_vs_reference": ratio, **extra})
    print(f"\n{name}: genbench {genbench_s:.3f} s, reference {reference_s:.3f} s, ratio {ratio:.2f}")
    return ratio


@pytest.fixture(scope="module")
def dcgan_and_val(manager, digits):
    model = build(manager.models.get("dcgan"), digits)
    train_steps(model, digits, 30)
    model.eval().requires_grad_(False)
    val = digits.split("val")["x"][: QUICK_AIS.obs_sigma_val_points]
    return model, digits.spec.dequantize(val, generator=torch.Generator().manual_seed(4321))


def per_sigma_runs(model, x_val, grid, settings):
    """One AIS run per sigma, every sigma's rows in one batch: the mean estimate per sigma."""
    n = len(x_val)
    sigma = torch.tensor(grid, dtype=x_val.dtype).repeat_interleave(n)
    x_all = x_val.repeat(len(grid), *([1] * (x_val.dim() - 1)))
    return ais_log_likelihood(model, x_all, settings, sigma=sigma).log_px.view(len(grid), n).mean(1)


def test_obs_sigma_choice_from_one_path(benchmark, dcgan_and_val):
    model, x_val = dcgan_and_val
    grid = QUICK_AIS.obs_sigma_grid

    def ours():
        torch.manual_seed(0)
        return select_obs_sigma(model, x_val, grid, SIGMA_AIS)

    def reference():
        torch.manual_seed(0)
        return per_sigma_runs(model, x_val, grid, SIGMA_AIS)

    benchmark.pedantic(ours, rounds=2, iterations=1)
    ((best, scores), ours_s), (ref_scores, ref_s) = _side_by_side(ours, reference, rounds=2)
    assert best in grid and set(scores) == set(grid) and all(math.isfinite(v) for v in scores.values())
    ratio = _report(benchmark, f"obs-sigma choice over {len(grid)} sigmas", ours_s, ref_s,
                    sigmas=len(grid), points=len(x_val), chosen=best,
                    reference_chosen=grid[int(ref_scores.argmax())])
    assert ratio < 0.5, "scoring every sigma from one path must cost well under one run per sigma"


@pytest.fixture(scope="module")
def vae_and_points(manager, digits):
    return trained_vae_and_points(manager, digits, IWAE_POINTS)


@torch.no_grad()
def iwae_reference(model, x, k, rows):
    """log (1/k) sum_k p(x, z_k) / q(z_k|x): the [k, points] log weights at once, decoded ``rows`` at a time."""
    q = model.encode(x)
    z = q.sample((k,))  # (k, n, d)
    log_w = (model.prior().log_prob(z) - q.log_prob(z)).double()
    z_rows, x_rows = z.reshape(k * len(x), -1), x.repeat(k, *([1] * (x.dim() - 1)))
    decoded = [model.decode(zc).log_prob(xc) for zc, xc in zip(z_rows.split(rows), x_rows.split(rows))]
    log_w += torch.cat(decoded).view(k, len(x)).double()
    return torch.logsumexp(log_w, 0) - math.log(k)


def test_iwae_against_a_vectorised_reference(benchmark, vae_and_points):
    model, x = vae_and_points

    def ours():
        torch.manual_seed(0)
        return iwae_bounds(model, x, IWAE_K, QUICK.iwae_chunk_rows).iwae

    def reference():
        torch.manual_seed(0)
        return iwae_reference(model, x, IWAE_K, QUICK.iwae_chunk_rows)

    benchmark.pedantic(ours, rounds=3, iterations=1)
    (iwae, ours_s), (ref, ref_s) = _side_by_side(ours, reference)
    # the same estimator from other draws: the mean difference over the points is Monte Carlo noise
    diff = iwae - ref
    assert abs(float(diff.mean())) < 3 * float(diff.std()) / math.sqrt(len(diff)), diff
    _report(benchmark, f"IWAE K={IWAE_K} on {IWAE_POINTS} points", ours_s, ref_s, points=IWAE_POINTS, k=IWAE_K)


def test_kid_with_blas_threads_held_to_torchs(benchmark):
    from threadpoolctl import threadpool_limits
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(0)
    gen, real = (torch.randn(n, 64, generator=g, dtype=torch.float64) for n in (350, 447))

    def kid():
        return kid_features_to_metric(gen, real, kid_subsets=QUICK.kid_subsets, kid_subset_size=350, kid_degree=3,
                                      kid_gamma=None, kid_coef0=1, kid_kernel="poly", rng_seed=0, verbose=False)

    def ours():
        with library_threads():
            return kid()

    def reference():  # OpenBLAS's own choice where nothing limits it: one thread per core
        with threadpool_limits(limits=os.cpu_count()):
            return kid()

    benchmark.pedantic(ours, rounds=3, iterations=1)
    (held, ours_s), (free, free_s) = _side_by_side(ours, reference)
    assert held == pytest.approx(free, rel=1e-9)  # the thread count changes the time, not the value
    _report(benchmark, f"KID, BLAS at torch's {torch.get_num_threads()} thread(s) vs {os.cpu_count()}", ours_s, free_s,
            torch_threads=torch.get_num_threads(), cores=os.cpu_count())
