"""Optimisers for model families: the same algorithms as ``torch.optim``, with fast defaults.

The networks of a benchmark under a budget of CPU seconds are small: a few dozen parameter
tensors of a few thousand elements each.  ``torch.optim.Adam`` by default updates them one tensor
at a time, a dozen small kernels per tensor, and on such a model that loop costs as much as the
forward and backward passes together.  The fused kernel updates every tensor of a device in one
pass (``foreach`` in a few), with the same algorithm and hyper-parameters, so a budget buys more
updates of the model and no fewer.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

try:  # the device types that have fused optimiser kernels (CPU and CUDA among them since torch 2.4)
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices as _fused_device_types
except ImportError:  # a torch that moved the helper: the two devices genbench trains on
    def _fused_device_types() -> list[str]:
        return ["cpu", "cuda"]


def _tensors(params: list) -> list[torch.Tensor]:
    """The parameter tensors of ``params``: tensors, or param groups (dicts with ``"params"``)."""
    out: list[torch.Tensor] = []
    for item in params:
        if isinstance(item, dict):
            group = item["params"]
            out.extend([group] if isinstance(group, torch.Tensor) else group)
        else:
            out.append(item)
    return out


def adam(params: Iterable, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` with its fused kernel where torch
    has one for the parameters' device and dtype, else its multi-tensor (``foreach``) kernel.

    Why: a small model has many small tensors, and the per-tensor loop of the default Adam then
    dominates the step (see the module docstring).  The choice is made from the parameters as they
    are when the optimiser is built; genbench builds a model on the CPU and then moves it to its
    device, and both the CPU and CUDA have the fused kernel.  ``params`` is anything
    ``torch.optim.Adam`` accepts (a generator is read once)."""
    params = list(params)
    devices = set(_fused_device_types())
    fused = all(p.device.type in devices and torch.is_floating_point(p) for p in _tensors(params))
    kernel = {"fused": True} if fused else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kernel)


def linear_decay(base_lr: float, progress: float, decay_from: float) -> float:
    """Constant, then linearly down to 0 over the rest of the budget."""
    if progress <= decay_from:
        return base_lr
    return base_lr * max(0.0, 1.0 - progress) / max(1e-8, 1.0 - decay_from)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer``."""
    for group in optimizer.param_groups:
        group["lr"] = lr
