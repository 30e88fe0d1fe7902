"""Annealed importance sampling (AIS) for decoder-based models, and its bidirectional check (BDMC).

AIS (Neal 2001) as used by Wu, Burda, Salakhutdinov and Grosse 2017 ("On the Quantitative Analysis
of Decoder-Based Generative Models", arXiv:1611.04273) to estimate log p(x) of VAEs, GANs and GMMNs:
a geometric path of intermediate distributions f_t(z) = p(z) p(x|z)^beta_t from the prior
(beta_0 = 0) to the unnormalised posterior (beta_T = 1), with the sigmoidal schedule of Grosse et al.
2015, one Hamiltonian Monte Carlo transition per intermediate distribution (leapfrog steps with unit
mass), and a step size adapted toward an acceptance rate of 0.65 (the paper's target) by a pilot
chain per data point, run in the same batch, whose current step the point's estimating chains take
-- so that no estimating chain's transitions depend on its own past.
Each chain's log weight sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}) is an unbiased estimate of
p(x) once exponentiated; the estimate of log p(x) is the log-mean-exp over the chains of a point, a
stochastic lower bound.  Chains of many data points run together as one batch of rows.

BDMC (Grosse, Ghahramani and Adams 2015, "Sandwiching the marginal likelihood using bidirectional
Monte Carlo", arXiv:1511.02543): on data simulated from the model, (z, x) with z ~ p(z) and
x ~ p(x|z), z is an exact posterior sample of x, so AIS run in reverse from z (beta from 1 to 0)
gives an unbiased estimate of 1/p(x): a stochastic *upper* bound on log p(x).  The gap between the
forward (lower) and reverse (upper) estimates bounds the error of the forward AIS estimate on such
data; a small gap says the chain settings are adequate.

The number of intermediate distributions grows with the data dimension (:func:`scaled_steps`), and
every estimate carries its diagnostics (:func:`diagnose_ais`): the BDMC gap, the acceptance rate and,
for models with an encoder, AIS minus IWAE on the same points -- both are stochastic lower bounds of
log p(x), and AIS with enough steps is not below IWAE.  An estimate that fails them is marked with the
reason, and the posterior-gap metric does not take it as its log p(x).

GANs have no observation model; they are scored as Wu et al. do, under p(x|z) = N(G(z), sigma^2 I),
with sigma chosen from a small grid by the best AIS estimate on validation points
(:func:`select_obs_sigma`; the chosen sigma is recorded with the result).  Since p(x|z)^beta of
N(G(z), sigma^2 I) depends on z through beta / sigma^2 only, one path annealed toward the smallest
sigma passes every larger sigma's target, and all of the grid is scored from that one path
(:func:`obs_sigma_scores`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from genbench.errors import GenbenchError
from genbench.metrics import EvalContext, Metric, evaluating
from genbench.model import Capability, GenerativeModel
from genbench.profiles import Profile

TARGET_ACCEPT = 0.65  # Wu et al. 2017 (Neal's recommendation for HMC)
ACCEPT_SMOOTHING = 0.9  # moving average of each chain's acceptance, as in Wu et al.'s code
INITIAL_STEP = 0.2
STEP_RANGE = (1e-4, 1.0)
SIGMOID_DELTA = 4.0  # sharpness of the sigmoidal schedule (Grosse et al. 2015)


@dataclass(frozen=True)
class AISSettings:
    steps: int = 1000  # intermediate distributions T
    chains: int = 16  # independent chains per data point
    leapfrog: int = 10  # leapfrog steps per HMC transition
    chunk_rows: int = 4000  # chains run together (points x chains per batch)

    def __post_init__(self):
        for name in ("steps", "chains", "leapfrog", "chunk_rows"):
            if int(getattr(self, name)) < 1:
                raise GenbenchError(f"AIS setting {name} must be at least 1, got {getattr(self, name)}")

    def describe(self) -> str:
        return f"T={self.steps} sigmoidal, {self.chains} chains, HMC {self.leapfrog} leapfrog"


@dataclass(frozen=True)
class AISProtocol:
    """The settings of the ``ais`` metric (and of the AIS run the posterior gaps reuse); the
    defaults are the quick profile's.  The test points are the profile's ``ais_points``, which
    every per-point likelihood column shares."""

    # More, shorter transitions beat fewer, longer ones at the same cost: on a digits VAE the BDMC gap
    # is 4.4 nats with T=100 x 5 leapfrog and 1.7 with T=200 x 3 (16 simulated points, 4 chains).
    steps: int = 200  # intermediate distributions (sigmoidal schedule) for data of ref_dim dimensions
    ref_dim: int = 64  # above it the steps grow in proportion to the data dimension (scaled_steps)
    chains: int = 4  # chains per data point
    leapfrog: int = 3  # leapfrog steps per HMC transition
    chunk_rows: int = 4000  # chains run as one batch (points x chains)
    # 8 BDMC points (was 16) so that evaluating a trial costs less than its 15 s of training: AIS on a
    # digits DCGAN took 17 s.  Its cost grows with points x chains x steps x leapfrog; fewer points
    # leave each point's estimate as it was and widen only its standard error, where fewer chains or
    # shorter chains bias it (measured on that DCGAN: 2 chains instead of 4 lost 1.2 nats and doubled
    # the BDMC gap; 2 leapfrog steps instead of 3 lost 2 nats).
    bdmc_points: int = 8  # points simulated from the model for the BDMC gap (0 = skip)
    obs_sigma_grid: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # GANs' observation sigma
    obs_sigma_val_points: int = 16  # validation points that choose it
    # Above this many data dimensions AIS is not run (None: always run).  T grows with D, and on a
    # CPU a 32x32x3 DCGAN's AIS at T = 9600 did not finish in 10 minutes; the quick profile leaves
    # such sets to the standard profile (meant for a GPU) and says so in the row.
    max_dim: int | None = 1024

    def run_settings(self, data_dim: int | None = None) -> AISSettings:
        """The chains' settings for data of ``data_dim`` dimensions (:func:`scaled_steps`)."""
        return AISSettings(steps=scaled_steps(self, data_dim), chains=self.chains, leapfrog=self.leapfrog,
                           chunk_rows=self.chunk_rows)


def scaled_steps(protocol: AISProtocol, data_dim: int | None) -> int:
    """Intermediate distributions for ``data_dim``-dimensional data: ``steps`` at the protocol's
    reference dimension ``ref_dim`` and proportionally more above it.  The log-likelihood
    log p(x|z) is a sum over the D data dimensions, so its variance along the path -- and with it
    the variance and bias of each annealing step's log weight -- grows with D; keeping the per-step
    change (beta_t - beta_(t-1)) * log p(x|z) at the same scale needs T proportional to D (Wu et
    al. 2017 use thousands of steps for MNIST's 784)."""
    if data_dim is None or data_dim <= protocol.ref_dim:
        return protocol.steps
    return math.ceil(protocol.steps * data_dim / protocol.ref_dim)


def describe_schedule(protocol: AISProtocol) -> str:
    return (f"T = {protocol.steps} x max(1, D/{protocol.ref_dim}) sigmoidal steps for D data dimensions, "
            f"{protocol.chains} chains, HMC {protocol.leapfrog} leapfrog")


def sigmoid_schedule(steps: int, delta: float = SIGMOID_DELTA) -> torch.Tensor:
    """beta_0 = 0 < beta_1 < ... < beta_T = 1, dense near both ends (Grosse et al. 2015)."""
    if steps == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    s = torch.sigmoid(delta * torch.linspace(-1.0, 1.0, steps + 1, dtype=torch.float64))
    return (s - s[0]) / (s[-1] - s[0])


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, sigma^2 I) per row, with one sigma per row."""
    diff = (x - mean).flatten(1)
    d = diff.shape[1]
    return -0.5 * (diff**2).sum(1) / sigma**2 - d * sigma.log() - 0.5 * d * math.log(2 * math.pi)


class _Energy:
    """log p(z) and log p(x|z) of a batch of rows (one chain each) with their gradients in z.
    With ``sigma`` (one per row) p(x|z) is N(decode(z).mean, sigma^2 I): the Gaussian observation
    model of a decoder with ``config.obs_sigma``, evaluated for several sigmas in one batch."""

    def __init__(self, model: GenerativeModel, x_rows: torch.Tensor, sigma: torch.Tensor | None = None):
        self.model = model
        self.x = x_rows
        self.sigma = sigma
        self.prior = model.prior()

    def __call__(self, z: torch.Tensor):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            decoded = self.model.decode(z)
            if self.sigma is None:
                ll = decoded.log_prob(self.x)
            else:
                ll = gaussian_log_prob(self.x, decoded.mean, self.sigma)
            lp = self.prior.log_prob(z)
            if ll.shape != (len(z),) or lp.shape != (len(z),):
                raise GenbenchError(
                    f"{self.model.name}: decode(z).log_prob(x) gave shape {tuple(ll.shape)} and "
                    f"prior().log_prob(z) gave {tuple(lp.shape)} for {len(z)} latent rows; both must "
                    f"return one value per row (event shapes: the data shape and (latent_dim,))")
            (g_ll,) = torch.autograd.grad(ll.sum(), z)
            (g_lp,) = torch.autograd.grad(lp.sum(), z)
        return _State(z.detach(), ll.detach(), lp.detach(), g_ll, g_lp)


@dataclass
class _State:
    z: torch.Tensor  # (rows, d)
    ll: torch.Tensor  # log p(x|z), (rows,)
    lp: torch.Tensor  # log p(z), (rows,)
    g_ll: torch.Tensor
    g_lp: torch.Tensor

    def log_target(self, beta: torch.Tensor) -> torch.Tensor:
        return self.lp + beta * self.ll

    def grad(self, beta: torch.Tensor) -> torch.Tensor:
        return self.g_lp + beta.unsqueeze(-1) * self.g_ll


def _where(mask: torch.Tensor, a: _State, b: _State) -> _State:
    col = mask.unsqueeze(-1)
    return _State(torch.where(col, a.z, b.z), torch.where(mask, a.ll, b.ll), torch.where(mask, a.lp, b.lp),
                  torch.where(col, a.g_ll, b.g_ll), torch.where(col, a.g_lp, b.g_lp))


def hmc_transition(energy: _Energy, state: _State, beta: torch.Tensor, step: torch.Tensor, leapfrog: int):
    """One HMC transition leaving p(z) p(x|z)^beta invariant; ``beta`` (rows,) and ``step``
    (rows, 1) are per row.  Returns the new state and each row's acceptance probability."""
    v0 = torch.randn_like(state.z)
    v = v0 + 0.5 * step * state.grad(beta)
    new = state
    for i in range(leapfrog):
        new = energy(new.z + step * v)
        if i < leapfrog - 1:
            v = v + step * new.grad(beta)
    v = v + 0.5 * step * new.grad(beta)
    log_ratio = (new.log_target(beta) - 0.5 * (v**2).sum(-1)) - (state.log_target(beta) - 0.5 * (v0**2).sum(-1))
    log_ratio = torch.nan_to_num(log_ratio, nan=-math.inf)  # a diverged trajectory is rejected
    accept_prob = log_ratio.clamp(max=0.0).exp()
    accept = torch.rand_like(accept_prob) < accept_prob
    return _where(accept, new, state), accept_prob


def _adapt(step, avg_accept, accept_prob, rate):
    avg_accept = ACCEPT_SMOOTHING * avg_accept + (1 - ACCEPT_SMOOTHING) * accept_prob
    factor = torch.where(avg_accept > TARGET_ACCEPT, math.exp(rate), math.exp(-rate)).unsqueeze(-1)
    return (step * factor).clamp(*STEP_RANGE), avg_accept


def _adapt_rate(steps: int) -> float:
    # Wu et al. change the step by 2% per transition over thousands of transitions; a short
    # schedule gets proportionally larger changes so the step size can still track the posterior.
    return max(0.02, 10.0 / steps)


def _run_chains(model: GenerativeModel, x_rows: torch.Tensor, z0: torch.Tensor, betas: torch.Tensor,
                leapfrog: int, pilots: int, repeats: int, sigma: torch.Tensor | None = None,
                keep: tuple[int, ...] | None = None):
    """AIS from ``z0`` along ``betas``: a schedule (T+1,) shared by all rows, or one per row
    (T+1, rows); increasing runs forward, decreasing in reverse.

    The first ``pilots`` rows are pilot chains whose step sizes adapt toward the target acceptance;
    the remaining rows (``repeats`` consecutive rows per pilot) take their pilot's current step, so
    their transitions never depend on their own past.  Returns each non-pilot row's log weight
    sum_t (beta_t - beta_{t-1}) log p(x|z_{t-1}) and their mean acceptance probability.
    ``sigma``: see :class:`_Energy`.

    With ``keep`` (indices 1..T of ``betas``), the log weights are returned as they stood at each of
    those indices, shape (len(keep), rows): the sum up to t is the AIS log weight of the path's prefix
    ending at beta_t, an estimate for that intermediate target (:func:`obs_sigma_scores` reads every
    sigma of a grid off one path this way)."""
    energy = _Energy(model, x_rows, sigma)
    state = energy(z0)
    rows = len(z0)
    b = betas.to(z0.device, torch.float64)
    b = b.unsqueeze(1).expand(-1, rows) if b.dim() == 1 else b
    b32 = b.to(z0.dtype)
    logw = torch.zeros(rows, dtype=torch.float64, device=z0.device)
    pilot_step = torch.full((pilots, 1), INITIAL_STEP, device=z0.device, dtype=z0.dtype)
    avg_accept = torch.full((pilots,), TARGET_ACCEPT, device=z0.device, dtype=z0.dtype)
    steps = len(b) - 1
    rate = _adapt_rate(steps)
    accept_total = torch.zeros((), dtype=torch.float64, device=z0.device)
    kept = {}
    for t in range(1, steps + 1):
        logw += (b[t] - b[t - 1]) * state.ll.double()
        if keep is not None and t in keep:
            kept[t] = logw[pilots:].clone()
        if t == steps:
            break  # the state after the last weight is never used: no transition for it
        step = torch.cat([pilot_step, pilot_step.repeat_interleave(repeats, dim=0)])
        state, accept_prob = hmc_transition(energy, state, b32[t], step, leapfrog)
        pilot_step, avg_accept = _adapt(pilot_step, avg_accept, accept_prob[:pilots], rate)
        accept_total += accept_prob[pilots:].double().mean()
    accept = float(accept_total) / max(1, steps - 1)
    if keep is not None:
        return torch.stack([kept[t] for t in keep]), accept
    return logw[pilots:], accept


def _annealed(model: GenerativeModel, x: torch.Tensor, z_start, betas: torch.Tensor, settings: AISSettings,
              sigma: torch.Tensor | None = None, keep: tuple[int, ...] | None = None) -> tuple[torch.Tensor, float]:
    """Log weights of ``settings.chains`` chains per row of ``x`` (point-major), started at
    ``z_start(reps)``: ``reps`` consecutive starting latents for each row of ``x``.

    One pilot chain per row of ``x`` runs in the same batch and adapts its step size; the row's
    estimating chains use the pilot's step.  Adapting the estimating chains themselves (as Wu et
    al. do) makes each transition depend on the chain's own past, which biases the estimate upward
    (measured: +0.03 nats at T=300 on a linear-Gaussian model, 3 standard errors)."""
    k, n = settings.chains, len(x)
    x_all = torch.cat([x, _repeat_rows(x, k)])
    z_all = torch.cat([z_start(1), z_start(k)])
    b_all = betas if betas.dim() == 1 else torch.cat([betas, betas.repeat_interleave(k, dim=1)], dim=1)
    s_all = None if sigma is None else torch.cat([sigma, _repeat_rows(sigma, k)])
    return _run_chains(model, x_all, z_all, b_all, settings.leapfrog, pilots=n, repeats=k, sigma=s_all, keep=keep)


def _prior_starts(prior, n: int):
    """Starting points drawn from the prior: ``reps`` per each of ``n`` rows."""
    return lambda reps: prior.sample((n * reps,))


def _repeat_rows(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat_interleave(k, dim=0)


def _log_mean_exp(logw: torch.Tensor, n: int, k: int) -> torch.Tensor:
    return torch.logsumexp(logw.view(n, k), dim=1) - math.log(k)


@dataclass
class AISResult:
    log_px: torch.Tensor  # per point, float64, CPU
    accept_rate: float


def ais_log_likelihood(model: GenerativeModel, x: torch.Tensor, settings: AISSettings,
                       sigma: torch.Tensor | None = None) -> AISResult:
    """Forward AIS estimate of log p(x) per point (a stochastic lower bound), shape (n,).

    Chains of several points run as one batch of at most ``settings.chunk_rows`` rows; uses the
    global torch generator (seed it, or use :func:`seeded`).  ``sigma`` (one per point) scores
    each point under N(decode(z).mean, sigma^2 I) instead of the model's own decoder."""
    k = settings.chains
    betas = sigmoid_schedule(settings.steps)
    prior = model.prior()
    per_chunk = max(1, settings.chunk_rows // k)
    out, accepts = [], []
    chunks = x.split(per_chunk)
    sigmas = [None] * len(chunks) if sigma is None else sigma.to(x.device, x.dtype).split(per_chunk)
    for xc, sc in zip(chunks, sigmas):
        logw, acc = _annealed(model, xc, _prior_starts(prior, len(xc)), betas, settings, sc)
        out.append(_log_mean_exp(logw, len(xc), k).cpu())
        accepts.append(acc)
    return AISResult(torch.cat(out), sum(accepts) / len(accepts))


@dataclass
class BDMCResult:
    lower: torch.Tensor  # forward AIS estimate per simulated point
    upper: torch.Tensor  # reverse AIS estimate per simulated point
    x: torch.Tensor  # the simulated points

    @property
    def gap(self) -> float:
        return float((self.upper - self.lower).mean())

    @property
    def gap_sem(self) -> float:
        """Standard error of ``gap`` over the simulated points (0 for a single point)."""
        d = self.upper - self.lower
        return float(d.std() / math.sqrt(len(d))) if len(d) > 1 else 0.0


def simulate(model: GenerativeModel, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, x) with z ~ p(z), x ~ p(x|z): z is an exact sample of the posterior p(z|x)."""
    with torch.no_grad():
        z = model.prior().sample((n,))
        x = model.decode(z).sample()
    return z, x


def bdmc(model: GenerativeModel, n: int, settings: AISSettings) -> BDMCResult:
    """Forward and reverse AIS on ``n`` points simulated from the model (Grosse et al. 2015); the
    two directions run as one batch (each row with its own schedule)."""
    k = settings.chains
    z, x = simulate(model, n)
    forward = sigmoid_schedule(settings.steps)
    prior = model.prior()
    per_chunk = max(1, settings.chunk_rows // (2 * k))
    lower, upper = [], []
    for zc, xc in zip(z.split(per_chunk), x.split(per_chunk)):
        m = len(xc)
        betas = torch.cat([forward.unsqueeze(1).expand(-1, m), forward.flip(0).unsqueeze(1).expand(-1, m)], 1)

        def starts(reps, zc=zc, m=m):
            # rows 0..m-1 anneal forward from the prior, rows m..2m-1 in reverse from the exact sample
            return torch.cat([prior.sample((m * reps,)), _repeat_rows(zc, reps)])

        logw, _ = _annealed(model, torch.cat([xc, xc]), starts, betas, settings)
        lower.append(_log_mean_exp(logw[: m * k], m, k).cpu())
        # the reverse weights estimate 1/p(x) without bias: minus their log-mean-exp bounds log p(x) above
        upper.append((-_log_mean_exp(logw[m * k :], m, k)).cpu())
    return BDMCResult(lower=torch.cat(lower), upper=torch.cat(upper), x=x)


# --- the Gaussian observation model of decoders without one (GANs) --------------------------------


def has_obs_sigma(model: GenerativeModel) -> bool:
    return hasattr(model.config, "obs_sigma")


@contextlib.contextmanager
def obs_sigma(model: GenerativeModel, sigma: float | None):
    """Temporarily set ``model.config.obs_sigma`` (no-op for ``None``); restored on exit."""
    if sigma is None:
        yield
        return
    if not has_obs_sigma(model):
        raise GenbenchError(f"{model.name} has no config.obs_sigma: its decoder has its own observation model")
    old = model.config.obs_sigma
    model.config.obs_sigma = float(sigma)
    try:
        yield
    finally:
        model.config.obs_sigma = old


def _obs_model_is_gaussian(model: GenerativeModel, x: torch.Tensor) -> bool:
    """Whether decode(z) is N(decode(z).mean, obs_sigma^2 I), checked on a few prior samples."""
    with torch.no_grad():
        z = model.prior().sample((min(4, len(x)),))
        decoded = model.decode(z)
        try:
            mean = decoded.mean
        except NotImplementedError:
            return False
        xs = x[: len(z)]
        sigma = torch.full((len(z),), float(model.config.obs_sigma), device=x.device, dtype=x.dtype)
        return torch.allclose(decoded.log_prob(xs), gaussian_log_prob(xs, mean, sigma), rtol=1e-4, atol=1e-3)


# Share of the sigma path's steps spent up to the largest sigma (the widest, easiest posterior); the
# rest anneals geometrically through the smaller ones.  On a digits DCGAN a 200-step path split so
# chose the sigma that one 200-step run per sigma chose, its score within 2 nats of theirs.
SIGMA_PATH_FIRST = 0.25


def obs_sigma_path(grid, steps: int, first: int) -> tuple[torch.Tensor, dict[float, int]]:
    """One schedule that passes the AIS target of every sigma of ``grid``, and the index of each.

    Under p(x|z) = N(G(z), s^2 I) the intermediate target p(z) p(x|z)^beta depends on z through
    beta / s^2 only, so the target of sigma s is that of the smallest sigma at beta = (s_min / s)^2:
    one path annealed toward the smallest sigma passes through every larger sigma's posterior.  The
    path is a sigmoidal schedule of ``first`` steps up to the largest sigma's target (as one run for
    that sigma alone would be), then ``steps - first`` steps geometric in beta up to beta = 1,
    shared among the gaps between neighbouring sigmas in proportion to log beta (at least one each),
    so that every sigma's target is a point of the schedule.  Returns the betas (float64, from 0 to 1)
    and, per sigma, the index of its target."""
    sigmas = sorted({float(s) for s in grid}, reverse=True)  # largest first: smallest beta first
    smallest = sigmas[-1]
    targets = [(smallest / s) ** 2 for s in sigmas]
    if len(sigmas) == 1:
        return sigmoid_schedule(steps), {sigmas[0]: steps}
    steps = max(steps, len(sigmas))  # at least one step per sigma
    first = max(1, min(first, steps - len(sigmas) + 1))
    span = math.log(1.0 / targets[0])
    rest = steps - first
    # steps per gap in proportion to its share of log beta, each at least one, summing to ``rest``
    shares = [math.log(b / a) / span * rest for a, b in zip(targets[:-1], targets[1:])]
    counts = [max(1, math.floor(c)) for c in shares]
    for i in sorted(range(len(counts)), key=lambda i: counts[i] - shares[i]):
        if sum(counts) >= rest:
            break
        counts[i] += 1
    while sum(counts) > rest:  # only where the minimum of one step per gap overshot
        i = max(range(len(counts)), key=lambda i: counts[i])
        counts[i] -= 1
    parts = [targets[0] * sigmoid_schedule(first)]
    for (a, b), n in zip(zip(targets[:-1], targets[1:]), counts):
        parts.append(torch.logspace(math.log10(a), math.log10(b), n + 1, dtype=torch.float64)[1:])
    betas = torch.cat(parts)
    betas[-1] = 1.0
    index, t = {sigmas[0]: first}, first
    for sigma, n in zip(sigmas[1:], counts):
        t += n
        index[sigma] = t
    return betas, index


def obs_sigma_scores(model: GenerativeModel, x: torch.Tensor, grid, settings: AISSettings,
                     first: int | None = None) -> dict[float, torch.Tensor]:
    """AIS estimates of log p(x) per point under N(decode(z).mean, s^2 I) for every s of ``grid``,
    from one path (:func:`obs_sigma_path`, ``settings.steps`` steps, ``first`` of them up to the
    largest sigma: by default the share ``SIGMA_PATH_FIRST``).  The log weight of the path's prefix
    up to a sigma's target estimates log Z_s, Z_s = integral of p(z) N(x; G(z), s_min^2 I)^beta_s dz,
    and with beta_s = (s_min / s)^2 the two densities differ by a constant factor:
    N(x; G, s^2 I) = N(x; G, s_min^2 I)^beta_s (2 pi s^2)^(-D/2) (2 pi s_min^2)^(D beta_s / 2)."""
    k = settings.chains
    first = max(1, round(SIGMA_PATH_FIRST * settings.steps)) if first is None else first
    betas, index = obs_sigma_path(grid, settings.steps, first)
    sigmas = list(index)
    smallest = min(sigmas)
    keep = tuple(index[s] for s in sigmas)
    d = x[0].numel()
    prior = model.prior()
    per_chunk = max(1, settings.chunk_rows // k)
    out: dict[float, list[torch.Tensor]] = {s: [] for s in sigmas}
    for xc in x.split(per_chunk):
        sigma_rows = torch.full((len(xc),), smallest, device=x.device, dtype=x.dtype)
        logw, _ = _annealed(model, xc, _prior_starts(prior, len(xc)), betas, settings, sigma_rows, keep=keep)
        for s, lw in zip(sigmas, logw):
            beta = float(betas[index[s]])
            shift = -0.5 * d * math.log(2 * math.pi * s**2) + 0.5 * d * beta * math.log(2 * math.pi * smallest**2)
            out[s].append(_log_mean_exp(lw, len(xc), k).cpu() + shift)
    return {s: torch.cat(v) for s, v in out.items()}


def select_obs_sigma(model: GenerativeModel, x_val: torch.Tensor, grid, settings: AISSettings) -> tuple[float, dict]:
    """The sigma of the grid with the highest mean AIS estimate of log p(x) on ``x_val`` (validation
    data, never test data), and every sigma's score.  When the decoder is the Gaussian observation
    model its ``config.obs_sigma`` declares, every sigma is scored from one annealing path
    (:func:`obs_sigma_scores`: the cost of one run instead of one per sigma); otherwise one run each."""
    grid = [float(s) for s in grid]
    if not grid:
        raise GenbenchError("the observation-sigma grid is empty; give at least one positive value")
    bad = [s for s in grid if not s > 0]
    if bad:
        raise GenbenchError(f"observation sigma must be positive, got {bad} in the grid {grid}")
    if _obs_model_is_gaussian(model, x_val):
        per_point = obs_sigma_scores(model, x_val, grid, settings)
        scores = {s: float(per_point[s].mean()) for s in grid}
    else:
        scores = {}
        for s in grid:
            with obs_sigma(model, s):
                scores[s] = float(ais_log_likelihood(model, x_val, settings).log_px.mean())
    best = max(scores, key=lambda s: scores[s] if math.isfinite(scores[s]) else -math.inf)
    return best, scores


# --- evaluation-context helpers shared with the posterior-gap metric ------------------------------


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed the global generators for a block without disturbing the caller's random state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def likelihood_points(ctx: EvalContext) -> torch.Tensor:
    """The dequantised test points every AIS-based column is computed on (the same for all)."""
    from genbench.metrics.likelihood import dequantized_test

    return dequantized_test(ctx)[: ctx.profile.ais_points]


def chosen_obs_sigma(ctx: EvalContext) -> tuple[float | None, dict]:
    """For a model with ``config.obs_sigma``: the sigma chosen on validation data (memoised)."""
    if not has_obs_sigma(ctx.model):
        return None, {}
    if "obs_sigma" not in ctx.memo:
        protocol = ais_protocol(ctx)
        val = ctx.dataset.split("val")["x"][: protocol.obs_sigma_val_points].cpu()  # CPU generator below
        x_val = ctx.dataset.spec.dequantize(val, generator=torch.Generator().manual_seed(4321)).to(ctx.device)
        settings = settings_for(ctx)
        with seeded(ctx.seed + 11, ctx.device), evaluating(ctx.model, no_grad=False):
            ctx.memo["obs_sigma"] = select_obs_sigma(ctx.model, x_val, protocol.obs_sigma_grid, settings)
    return ctx.memo["obs_sigma"]


def out_of_scope(ctx: EvalContext) -> str | None:
    """Why this context's profile does not run AIS on its data (None: it does)."""
    protocol = ais_protocol(ctx)
    dim = ctx.dataset.spec.dim
    if protocol.max_dim is not None and dim > protocol.max_dim:
        return (f"the {ctx.profile.name} profile runs AIS up to {protocol.max_dim} data dimensions and this set has "
                f"{dim} (T would be {scaled_steps(protocol, dim)} steps): use --profile standard, meant for a GPU")
    return None


def ais_protocol(ctx: EvalContext) -> AISProtocol:
    """The ``ais`` metric's settings in this context (the posterior gaps' AIS run uses them too)."""
    return ctx.settings_of(AISLikelihood)


def settings_for(ctx: EvalContext) -> AISSettings:
    return ais_protocol(ctx).run_settings(ctx.dataset.spec.dim)


def ais_on_test(ctx: EvalContext) -> AISResult:
    """Forward AIS on :func:`likelihood_points` under the chosen sigma (memoised per context)."""
    sigma, _ = chosen_obs_sigma(ctx)
    key = f"ais:{ctx.profile.ais_points}:{sigma}"
    if key not in ctx.memo:
        x = likelihood_points(ctx)
        with seeded(ctx.seed + 7, ctx.device), evaluating(ctx.model, no_grad=False), obs_sigma(ctx.model, sigma):
            ctx.memo[key] = ais_log_likelihood(ctx.model, x, settings_for(ctx))
    return ctx.memo[key]


def iwae_on_test(ctx: EvalContext):
    """ELBO, IWAE and its effective sample size with K = ``iwae_k`` samples of the encoder on
    :func:`likelihood_points` (memoised: the AIS diagnostics and the posterior gaps share them).
    None for a model without an encoder."""
    if not ctx.model.has(Capability.LATENT):
        return None
    from genbench.metrics.likelihood import iwae_bounds

    sigma, _ = chosen_obs_sigma(ctx)
    key = f"iwae:{ctx.profile.ais_points}:{ctx.profile.iwae_k}:{sigma}"
    if key not in ctx.memo:
        x = likelihood_points(ctx)
        with seeded(ctx.seed + 23, ctx.device), evaluating(ctx.model), obs_sigma(ctx.model, sigma):
            ctx.memo[key] = iwae_bounds(ctx.model, x, ctx.profile.iwae_k, ctx.profile.iwae_chunk_rows)
    return ctx.memo[key]


def bdmc_on_simulated(ctx: EvalContext) -> BDMCResult | None:
    """The BDMC check on ``bdmc_points`` simulated points (memoised); None when the profile skips it."""
    points = ais_protocol(ctx).bdmc_points
    if points <= 0:
        return None
    sigma, _ = chosen_obs_sigma(ctx)
    key = f"bdmc:{points}:{sigma}"
    if key not in ctx.memo:
        with seeded(ctx.seed + 13, ctx.device), evaluating(ctx.model, no_grad=False), obs_sigma(ctx.model, sigma):
            ctx.memo[key] = bdmc(ctx.model, points, settings_for(ctx))
    return ctx.memo[key]


# A converged AIS estimate is at least the IWAE bound of the same points (both are stochastic lower
# bounds; AIS with enough steps approaches log p(x)).  It is taken to sit below IWAE when the mean
# paired difference is below zero by more than BELOW_IWAE_Z standard errors (a one-sided test at
# about 2.5%) and by more than BELOW_IWAE_NATS (a shortfall smaller than that changes no reading).
BELOW_IWAE_Z, BELOW_IWAE_NATS = 2.0, 0.1
# The BDMC gap bounds forward AIS's error on simulated data.  It is too large when it exceeds both
# BDMC_GAP_NATS (Grosse et al. 2015 read a gap within about a nat as accurate) and the estimate's
# own standard error over the test points: then the possible bias outweighs the reported error bar.
BDMC_GAP_NATS = 1.0


@dataclass
class AISDiagnosis:
    ais_minus_iwae: float | None  # mean over the points of AIS - IWAE (None without an encoder)
    ais_minus_iwae_sem: float | None
    bdmc_gap: float | None
    reasons: list[str]

    @property
    def trusted(self) -> bool:
        return not self.reasons

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def diagnose_ais(ctx: EvalContext) -> AISDiagnosis:
    """AIS on the test points against IWAE on the same points, and the BDMC gap (memoised)."""
    if "ais_diagnosis" in ctx.memo:
        return ctx.memo["ais_diagnosis"]
    result = ais_on_test(ctx)
    settings = settings_for(ctx)
    dim = ctx.dataset.spec.dim
    ll = result.log_px
    sem = float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0
    reasons = []
    diff = diff_sem = None
    bounds = iwae_on_test(ctx)
    if bounds is not None:
        d = ll - bounds.iwae
        diff = float(d.mean())
        diff_sem = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else 0.0
        if diff < -max(BELOW_IWAE_Z * diff_sem, BELOW_IWAE_NATS):
            reasons.append(f"AIS {-diff:.3g} nats below IWAE (K={bounds.k}) on the same points: annealing "
                           f"too short ({settings.steps} steps) for {dim} dimensions")
    check = bdmc_on_simulated(ctx)
    gap = None if check is None else check.gap
    if gap is not None and gap > max(BDMC_GAP_NATS, sem):
        reasons.append(f"BDMC gap {gap:.3g} nats on data simulated from the model (above "
                       f"{max(BDMC_GAP_NATS, sem):.2g}): AIS with {settings.steps} steps may sit that far below "
                       f"log p(x)")
    if not math.isfinite(float(ll.mean())):
        reasons.append("AIS gave a non-finite estimate (diverged chains)")
    ctx.memo["ais_diagnosis"] = AISDiagnosis(diff, diff_sem, gap, reasons)
    return ctx.memo["ais_diagnosis"]


class AISLikelihood(Metric):
    """log p(x) by AIS for every model with a decoder and a prior, with its diagnostics: the BDMC gap,
    the acceptance rate and, for models with an encoder, its position relative to IWAE."""

    name = "ais"
    allowance_s = {"standard": 6 * 3600.0}  # thousands of annealing / fit steps per point
    columns = {"ais": "higher", "ais_sem": "lower", "ais_bpd": "lower", "bdmc_gap": "lower"}
    # also reported: obs_sigma (the chosen sigma of a Gaussian observation model), ais_accept,
    # ais_steps, bdmc_gap_sem and, with an encoder, ais_minus_iwae (mean over the points) and its
    # standard error
    marked_with_ais = ("ais", "ais_sem", "ais_bpd")
    requirement = "decoder or latent (a decoder p(x|z) and a prior p(z))"
    headline = {"ais_bpd": 80, "ais": 120}
    Settings = AISProtocol
    profile_settings = {
        "standard": {"steps": 10_000, "ref_dim": 784, "chains": 16, "leapfrog": 10, "bdmc_points": 100,
                     "obs_sigma_grid": (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3),
                     "obs_sigma_val_points": 100, "max_dim": None},
        "test": {"steps": 10, "chains": 2, "leapfrog": 2, "bdmc_points": 4, "obs_sigma_grid": (0.05, 0.1),
                 "obs_sigma_val_points": 4, "max_dim": None},
    }

    def applies(self, model_cls, dataset):
        caps = set(model_cls.capabilities)
        if not caps & {Capability.DECODER, Capability.LATENT}:
            return False, f"needs {self.requirement}"
        return super().applies(model_cls, dataset)

    def applies_in(self, ctx: EvalContext) -> tuple[bool, str]:
        why = out_of_scope(ctx)
        return why is None, why or ""

    def estimator(self, profile: Profile) -> str:
        protocol = self.settings(profile)
        return (f"AIS (Wu et al. 2017): {describe_schedule(protocol)}, step sizes from a pilot chain per point "
                f"adapted to accept {TARGET_ACCEPT}, on {profile.ais_points} dequantised test points; BDMC gap "
                f"(Grosse et al. 2015) on {protocol.bdmc_points} simulated points; a decoder with config.obs_sigma "
                f"is scored under N(G(z), sigma^2 I), sigma in {list(protocol.obs_sigma_grid)} chosen by AIS on "
                f"{protocol.obs_sigma_val_points} validation points (every sigma from one path of the same T annealed "
                f"toward the smallest, {SIGMA_PATH_FIRST:g} of its steps up to the largest); marked when below IWAE "
                f"(K={profile.iwae_k}, same points) by more than max({BELOW_IWAE_Z:g} SE, {BELOW_IWAE_NATS:g} nats) "
                f"or when the BDMC gap exceeds max({BDMC_GAP_NATS:g} nat, its SE)")

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        sigma, _ = chosen_obs_sigma(ctx)
        result = ais_on_test(ctx)
        ll = result.log_px
        out = {"ais": float(ll.mean()), "ais_sem": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0,
               "ais_bpd": ctx.dataset.spec.bits_per_dim(-ll.mean()), "ais_accept": result.accept_rate,
               "ais_steps": float(settings_for(ctx).steps)}
        diagnosis = diagnose_ais(ctx)
        if diagnosis.bdmc_gap is not None:
            out["bdmc_gap"] = diagnosis.bdmc_gap
            out["bdmc_gap_sem"] = bdmc_on_simulated(ctx).gap_sem  # few simulated points: a noisy check
        if diagnosis.ais_minus_iwae is not None:
            out["ais_minus_iwae"] = diagnosis.ais_minus_iwae
            out["ais_minus_iwae_sem"] = diagnosis.ais_minus_iwae_sem
        if not diagnosis.trusted:
            for column in self.marked_with_ais:
                ctx.mark(column, diagnosis.reason)
        if sigma is not None:
            out["obs_sigma"] = sigma
        return out
