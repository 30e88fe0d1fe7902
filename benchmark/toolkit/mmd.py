"""Maximum mean discrepancy (Gretton et al. 2012) with the kernels genbench uses: the unbiased
estimate of MMD^2 under any kernel, and the inverse multiquadratic (IMQ) kernel sum of Tolstikhin et
al. 2018 (WAE), which both the WAE's penalty and the aggregate-posterior metric use."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from genbench.errors import GenbenchError

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (a, b) -> the (len(a), len(b)) kernel matrix

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)  # WAE's multiples of the base constant C


def imq_kernels(base: float, scales: Sequence[float] = IMQ_SCALES) -> Kernel:
    """k(a, b) = sum_s C_s / (C_s + |a - b|^2) with C_s = ``base`` * s.  WAE's convention for codes of
    a d-dimensional N(0, sigma^2 I) prior is ``base`` = 2 d sigma^2."""
    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        sq = torch.cdist(a, b).pow(2)
        return sum(base * s / (base * s + sq) for s in scales)
    return kernel


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, kernel: Kernel) -> torch.Tensor:
    """The unbiased estimate of MMD^2 between the rows of ``x`` (n, d) and ``y`` (m, d): the
    within-sample terms average over the pairs i != j, the cross term over all n m pairs.  A tensor,
    differentiable (usable as a training penalty); it can be slightly negative.  Both sides are
    computed in their common dtype."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise GenbenchError(f"MMD needs two sample matrices with the same width, got {tuple(x.shape)} "
                            f"and {tuple(y.shape)}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise GenbenchError(f"the unbiased MMD needs at least 2 samples on each side, got {n} and {m} "
                            f"(a training penalty needs batch_size >= 2)")
    dtype = torch.promote_types(x.dtype, y.dtype)
    x, y = x.to(dtype), y.to(dtype)
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
            + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean())


def imq_mmd2(x: torch.Tensor, y: torch.Tensor, base: float, scales: Sequence[float] = IMQ_SCALES) -> torch.Tensor:
    """Unbiased MMD^2 under :func:`imq_kernels` (``base``, ``scales``)."""
    return mmd2_unbiased(x, y, imq_kernels(base, scales))
