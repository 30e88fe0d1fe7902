"""The model contract's checks on a family's outputs, in the words that ``genbench check`` prints
and that fail a trial during evaluation (:func:`genbench.metrics.enforce_sample_contract`): each
returns what is wrong and how to fix it, or None."""

from __future__ import annotations

import math

import torch


def finite(t: torch.Tensor) -> bool:
    """Every value of ``t`` is finite."""
    return bool(torch.isfinite(t).all())


IMAGE_RANGE_TOLERANCE = 1e-6  # image samples may overshoot [0, 1] by float rounding, no more


def sample_violation(x, n: int, spec) -> tuple[str, str] | None:
    """What is wrong with ``x`` as the output of ``sample(n)`` for data described by ``spec``, as
    (what, fix), or None when it honours the contract: a tensor shaped ``(n, *spec.shape)``, of a
    floating dtype, finite, and for image data within [0, 1] (``IMAGE_RANGE_TOLERANCE``).
    ``genbench check`` and the evaluation of every trial use these same words."""
    if not isinstance(x, torch.Tensor):
        return f"sample returned {type(x).__name__}", "return a torch.Tensor"
    want = (n, *spec.shape)
    if tuple(x.shape) != want:
        return (f"sample({n}) has shape {tuple(x.shape)}, expected {want}",
                "return n samples shaped like the data: (n, *spec.shape)")
    if not x.is_floating_point():
        return f"sample dtype is {x.dtype}", "return floating-point samples (float32)"
    if not finite(x):
        bad = int((~torch.isfinite(x)).sum())
        return (f"samples contain NaN or infinity ({bad} of {x.numel()} values)",
                "check the generator/decoder for overflow")
    if spec.kind == "image" and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -IMAGE_RANGE_TOLERANCE or hi > 1 + IMAGE_RANGE_TOLERANCE:
            return (f"image samples range over [{lo:.3g}, {hi:.3g}]",
                    "image samples live in [0, 1]: end the decoder with a sigmoid, or map tanh outputs by (x+1)/2")
    return None


def log_likelihood_violation(ll, n: int, allow_zero_density: bool = False) -> tuple[str, str] | None:
    """What is wrong with ``ll`` as the output of ``log_likelihood`` on ``n`` points, as (what, fix),
    or None: one log-density per point, shape ``(n,)``, floating, never NaN or +inf.  A value of
    -inf says the model gives that point zero density; it is a violation unless
    ``allow_zero_density`` (evaluation allows it and reports the infinite NLL with its count;
    ``genbench check`` does not, since dequantised data must get a finite density to be trained on)."""
    if not isinstance(ll, torch.Tensor) or tuple(ll.shape) != (n,):
        return (f"log_likelihood of {n} points has shape {tuple(getattr(ll, 'shape', ()))}",
                "return one log-density per example: shape (n,), summed over the data dimensions")
    if not ll.is_floating_point():
        return f"log_likelihood dtype is {ll.dtype}", "return floating-point log-densities"
    bad = torch.isnan(ll) | (ll == math.inf)
    if not allow_zero_density:
        bad |= ll == -math.inf
    if bool(bad.any()):
        kinds = [name for name, mask in (("NaN", torch.isnan(ll)), ("+inf", ll == math.inf),
                                         ("-inf", ll == -math.inf)) if bool((mask & bad).any())]
        return (f"log_likelihood is {' / '.join(kinds)} on {int(bad.sum())} of {n} test points",
                "clamp log-scales / use log-sum-exp; dequantised test points must get finite density")
    return None
