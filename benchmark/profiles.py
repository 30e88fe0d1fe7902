"""Evaluation profiles: what every metric of one protocol shares (sample counts, test points).

``quick`` is the default for `genbench run` (a full suite in minutes on a laptop CPU); ``standard``
is near the published protocols.  A metric's own settings are the metric's (``Metric.Settings`` and
``Metric.profile_settings``, per profile name: AIS's schedule, the Parzen grid, the q* fit).  Every
number used is recorded with each result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    ais_points: int = 100  # test points of every per-point likelihood estimator: AIS, posterior gaps, exact NLL

    def as_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    "quick": Profile(
        name="quick", budget="15s",
        n_fid_samples=1000, n_reference=10_000, kid_subsets=50, kid_subset_size=500, is_splits=10,
        prc_neighborhood=3, iwae_k=1000, iwae_chunk_rows=4000, n_likelihood_points=447,
        n_mode_samples=2500,
        # 50 AIS test points (were 100) so that evaluating a trial costs less than its 15 s of training
        # (AIS on a digits DCGAN took 17 s): fewer points leave each point's estimate as it was and widen
        # only its standard error (by sqrt 2); see genbench.metrics.ais.AISProtocol for the chains
        ais_points=50,
    ),
    "standard": Profile(
        name="standard", budget="10m",
        n_fid_samples=5000, n_reference=50_000, kid_subsets=100, kid_subset_size=1000, is_splits=10,
        prc_neighborhood=3, iwae_k=5000, iwae_chunk_rows=4000, n_likelihood_points=10_000,
        n_mode_samples=2500,
        ais_points=1000,
    ),
    # for tests: tiny counts, same code paths
    "test": Profile(
        name="test", budget="30steps",
        n_fid_samples=200, n_reference=500, kid_subsets=10, kid_subset_size=100, is_splits=2,
        prc_neighborhood=3, iwae_k=20, iwae_chunk_rows=2000, n_likelihood_points=50,
        n_mode_samples=500,
        ais_points=8,
    ),
}


def get_profile(name: str) -> Profile:
    from genbench.errors import UnknownNameError

    if name not in PROFILES:
        raise UnknownNameError(f"unknown profile {name!r}; known profiles: {', '.join(PROFILES)}")
    return PROFILES[name]
