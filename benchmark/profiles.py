"""Evaluation profiles: the sample counts and estimator settings of one protocol.

``quick`` is the default for `genbench run` (a full suite in minutes on a laptop CPU); ``standard``
is near the published protocols.  Every number used is recorded with each result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Profile:
    name: str
    budget: str  # default budget per trial
    n_fid_samples: int  # generated samples for FID / IS / KID / precision-recall
    n_reference: int  # real images for the reference statistics (at most this many from train)
    kid_subsets: int
    kid_subset_size: int
    is_splits: int
    prc_neighborhood: int
    iwae_k: int  # importance samples of the IWAE bound
    iwae_chunk_rows: int  # decoder rows per chunk (points x samples): keeps temporaries small
    n_likelihood_points: int  # test points for likelihood metrics (at most the test split)
    n_mode_samples: int  # samples for the toy-mixture mode metrics
    extra: dict = field(default_factory=dict)  # settings added by plugins' metrics
    # annealed importance sampling (Wu et al. 2017) and its BDMC check (genbench.metrics.ais)
    # More, shorter transitions beat fewer, longer ones at the same cost: on a digits VAE the BDMC gap
    # is 4.4 nats with T=100 x 5 leapfrog and 1.7 with T=200 x 3 (16 simulated points, 4 chains).
    ais_steps: int = 200  # intermediate distributions (sigmoidal schedule) for data of ais_ref_dim dimensions
    ais_ref_dim: int = 64  # above it the steps grow in proportion to the data dimension
    ais_chains: int = 4  # chains per data point
    ais_leapfrog: int = 3  # leapfrog steps per HMC transition
    ais_chunk_rows: int = 4000  # chains run as one batch (points x chains)
    ais_points: int = 100  # test points of AIS and of every posterior-gap column
    bdmc_points: int = 16  # points simulated from the model for the BDMC gap (0 = skip)
    obs_sigma_grid: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # GANs' observation sigma
    obs_sigma_val_points: int = 16  # validation points that choose it
    # Parzen window (genbench.metrics.parzen)
    parzen_samples: int = 2000
    parzen_sigmas: int = 20  # size of the log grid of bandwidths, 1e-3 .. 10**0.5
    parzen_val_points: int = 500  # validation points that choose the bandwidth
    # local posteriors q* (Cremer et al. 2018; genbench.metrics.posterior)
    qstar_steps: int = 2000  # Adam steps at most (a fit that needs more is reported unconverged)
    qstar_samples: int = 4  # Monte Carlo samples per step
    qstar_lr: float = 5e-2  # initial Adam step; shrinks at each stationary window (norm test)

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "quick": Profile(
        name="quick", budget="15s",
        n_fid_samples=1000, n_reference=10_000, kid_subsets=50, kid_subset_size=500, is_splits=10,
        prc_neighborhood=3, iwae_k=1000, iwae_chunk_rows=4000, n_likelihood_points=447,
        n_mode_samples=2500,
        # 50 AIS test points and 8 BDMC points (were 100 and 16) so that evaluating a trial costs less than
        # its 15 s of training: AIS on a digits DCGAN took 17 s.  Its cost grows with points x chains x
        # steps x leapfrog; fewer points leave each point's estimate as it was and widen only its standard
        # error (by sqrt 2), where fewer chains or shorter chains bias it (measured on that DCGAN: 2 chains
        # instead of 4 lost 1.2 nats and doubled the BDMC gap; 2 leapfrog steps instead of 3 lost 2 nats).
        ais_steps=200, ais_ref_dim=64, ais_chains=4, ais_leapfrog=3, ais_points=50, bdmc_points=8,
        obs_sigma_grid=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5), obs_sigma_val_points=16,
        parzen_samples=2000, parzen_sigmas=20, parzen_val_points=500,
        qstar_steps=2000, qstar_samples=4, qstar_lr=5e-2,
    ),
    "standard": Profile(
        name="standard", budget="10m",
        n_fid_samples=5000, n_reference=50_000, kid_subsets=100, kid_subset_size=1000, is_splits=10,
        prc_neighborhood=3, iwae_k=5000, iwae_chunk_rows=4000, n_likelihood_points=10_000,
        n_mode_samples=2500,
        ais_steps=10_000, ais_ref_dim=784, ais_chains=16, ais_leapfrog=10, ais_points=1000, bdmc_points=100,
        obs_sigma_grid=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3), obs_sigma_val_points=100,
        parzen_samples=10_000, parzen_sigmas=30, parzen_val_points=2000,
        qstar_steps=10_000, qstar_samples=10, qstar_lr=5e-2,
    ),
    # for tests: tiny counts, same code paths
    "test": Profile(
        name="test", budget="30steps",
        n_fid_samples=200, n_reference=500, kid_subsets=10, kid_subset_size=100, is_splits=2,
        prc_neighborhood=3, iwae_k=20, iwae_chunk_rows=2000, n_likelihood_points=50,
        n_mode_samples=500,
        ais_steps=10, ais_ref_dim=64, ais_chains=2, ais_leapfrog=2, ais_points=8, bdmc_points=4,
        obs_sigma_grid=(0.05, 0.1), obs_sigma_val_points=4,
        parzen_samples=200, parzen_sigmas=8, parzen_val_points=100,
        qstar_steps=20, qstar_samples=2, qstar_lr=5e-2,
    ),
}


def get_profile(name: str) -> Profile:
    from genbench.errors import UnknownNameError

    if name not in PROFILES:
        raise UnknownNameError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
    return PROFILES[name]
