"""The model contract: what a family implements so that genbench can train and evaluate it.

A family is a ``torch.nn.Module`` subclass of :class:`GenerativeModel` with

* class attributes ``name`` (registry key), ``family`` (the row label in leaderboards),
  ``paper`` (citation), ``capabilities`` (what it can do, see :class:`Capability`),
  ``data_kinds`` (``"image"`` and/or ``"points"``) and ``Config`` (a dataclass of hyper-parameters
  with the published defaults);
* ``train_step(batch, progress)`` -- one optimisation step; returns a dict of named losses, each
  a 0-dim tensor (``loss.detach()``) or a float.  Tensors let the step end without waiting for the
  device: the runner reads them only when it checks, logs or records them (``.item()`` on every
  loss every step would make each step wait for the last on CUDA);
* ``sample(n, generator, condition=None)`` -- ``n`` samples in data space;
* ``condition_key`` -- for a family whose samples need an input (a caption, key patches): the
  batch key of that input.  Every metric, the sample grid and ``genbench check`` then pass
  ``condition=`` rows of that key from the dataset's held-out splits (see
  ``genbench.metrics.held_out_condition``), so such a model is scored on inputs it never saw;
* ``log_likelihood(x)`` -- exact log p(x) per example (exact-likelihood families only);
* ``encode(x)`` / ``decode(z)`` / ``prior()`` -- torch distributions (latent-variable families).

Optional parts that built-in metrics and the runner look for (all duck-typed; none is required):

=================================  ===============================================================
``config.batch_size``              the minibatch the runner draws (else the class's ``batch_size``)
``config.obs_sigma``               a decoder whose p(x|z) is N(G(z), obs_sigma^2 I) (generators under
                                   a Gaussian observation model): AIS and Parzen choose sigma on
                                   validation data (:class:`genbench.toolkit.GaussianObservationDecoder`)
``codes(x)``                       a deterministic encoder's codes, compared with ``prior()`` by the
                                   aggregate-posterior metric (autoencoders)
``translate(x, source, target)``   with the ``translate`` capability: images mapped between domains
``n_categories``                   InfoGAN-style models: the size of the categorical code, read by the
                                   family's own code-accuracy metric
``progressive``, ``stage``,        a growing generator (ProGAN): its stages, read by the family's
``sample_at_stage(n, stage)``      per-stage FID metric
=================================  ===============================================================

Capabilities are strings.  :class:`Capability` names the ones genbench's own metrics and checks
use; a plugin may declare a capability of its own (e.g. ``"patches"`` for key-patch completion) as
long as a registered metric needs it: registration rejects a capability nothing needs, which is
almost always a typo.

The model builds its own optimisers in ``__init__`` and keeps them in ``self.optimizers`` (a dict)
so that checkpoints can save and restore them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from genbench.errors import CapabilityError, GenbenchError


class Capability:
    """The capabilities genbench itself knows. Metrics declare which they need; models declare which
    they have.  A plugin's own capabilities are plain strings that its metrics need (see the module
    docstring)."""

    SAMPLE = "sample"  # sample(n) returns data-space samples
    LOG_LIKELIHOOD = "log_likelihood"  # log_likelihood(x) is exact
    LATENT = "latent"  # encode(x) -> q(z|x), decode(z) -> p(x|z), prior() -> p(z)
    DECODER = "decoder"  # decode(z) and prior() only (e.g. a GAN under an observation model)
    CONDITIONAL = "conditional"  # sample(n, condition=...) honours a condition
    TRANSLATE = "translate"  # translate(x, source, target) maps between domains

    ALL = frozenset({SAMPLE, LOG_LIKELIHOOD, LATENT, DECODER, CONDITIONAL, TRANSLATE})


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data to build itself.

    ``kind`` is ``"image"`` (tensors of shape ``(C, H, W)`` with values in [0, 1]) or ``"points"``
    (vectors of shape ``(D,)``).  ``levels`` is the number of quantisation levels of image data
    (17 for digits, 256 for MNIST), None for continuous data.  ``extras`` names the extra batch
    keys a derived dataset provides (e.g. ``"caption"``, ``"domain"``).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    levels: int | None = None
    num_classes: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def dequantize(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform dequantisation used by every family and every likelihood metric alike.

        Stored image values are bin centres ``(k + 0.5) / levels``; adding ``U(-0.5, 0.5) / levels``
        turns them into a continuous density on [0, 1]^D whose likelihood lower-bounds the
        probability of the discrete data.  Continuous data is returned unchanged.
        """
        if self.levels is None:
            return x
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + (u - 0.5) / self.levels

    def bits_per_dim(self, nll_nats: torch.Tensor | float) -> float:
        """Convert a per-example NLL in nats of the [0, 1]-scaled density to bits/dim of the
        discrete data (the usual convention: ``(nll + D log L) / (D log 2)``)."""
        nll = float(nll_nats)
        offset = self.dim * math.log(self.levels) if self.levels else 0.0
        return (nll + offset) / (self.dim * math.log(2.0))


@dataclass
class ModelConfig:
    """Base for family configs: every field needs a default (the published one)."""


class GenerativeModel(nn.Module):
    """Base class of every model family (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset({Capability.SAMPLE})
    data_kinds: ClassVar[frozenset[str]] = frozenset({"image", "points"})
    # Extra batch keys the family needs (e.g. {"caption"}); datasets lacking them don't apply.
    requires: ClassVar[frozenset[str]] = frozenset()
    # The batch key whose held-out rows every evaluator passes to sample(condition=...), for
    # families that cannot sample without an input (text-to-image, key-patch completion).
    condition_key: ClassVar[str | None] = None
    Config: ClassVar[type] = ModelConfig
    batch_size: ClassVar[int] = 64

    def __init__(self, config: Any, spec: DataSpec):
        super().__init__()
        self.config = config
        self.spec = spec
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    # --- which datasets --------------------------------------------------------------------

    @classmethod
    def applies_to(cls, spec: DataSpec) -> tuple[bool, str]:
        """Whether this family can run on data described by ``spec``, and if not, why."""
        if spec.kind not in cls.data_kinds:
            return False, f"{cls.name} models {sorted(cls.data_kinds)} data, not {spec.kind!r}"
        missing = cls.requires - set(spec.extras)
        if missing:
            return False, f"{cls.name} needs batch keys {sorted(missing)} that {spec.name} lacks"
        return True, ""

    @classmethod
    def make_config(cls, overrides: dict[str, Any] | None = None):
        """The family's config with published defaults, updated by ``overrides``."""
        overrides = dict(overrides or {})
        names = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = set(overrides) - names
        if unknown:
            raise GenbenchError(
                f"{cls.name}: unknown config field(s) {sorted(unknown)}; "
                f"the fields of {cls.Config.__name__} are {sorted(names)}"
            )
        return cls.Config(**overrides)

    # --- the hooks ---------------------------------------------------------------------------

    def train_step(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor | float]:
        """One optimisation step on ``batch`` (``batch["x"]`` is the data; derived datasets add
        keys).  ``progress`` in [0, 1] is the fraction of the budget spent.  Returns the losses
        by name, each a detached 0-dim tensor or a float (a non-finite value fails the trial)."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_step")

    def sample(self, n: int, generator: torch.Generator | None = None, condition: Any = None) -> torch.Tensor:
        """``n`` samples in data space, shape ``(n, *spec.shape)``."""
        raise CapabilityError(f"{self.name} does not declare the 'sample' capability")

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats per example, shape ``(n,)``."""
        raise CapabilityError(f"{self.name} has no exact log-likelihood")

    def encode(self, x: torch.Tensor) -> torch.distributions.Distribution:
        """The amortised posterior q(z|x), batch shape ``(n,)``."""
        raise CapabilityError(f"{self.name} has no encoder")

    def decode(self, z: torch.Tensor) -> torch.distributions.Distribution:
        """The observation model p(x|z), batch shape ``z.shape[:-1]``, event shape spec.shape."""
        raise CapabilityError(f"{self.name} has no decoder")

    def prior(self) -> torch.distributions.Distribution:
        """The prior p(z) (event shape ``(latent_dim,)``)."""
        raise CapabilityError(f"{self.name} has no prior")

    # --- helpers for subclasses -------------------------------------------------------------

    def maximum_likelihood_step(self, batch: dict[str, torch.Tensor], optimizer: str) -> dict[str, torch.Tensor]:
        """One step of maximum likelihood on dequantised data: the training step of every flow."""
        loss = -self.log_likelihood(self.spec.dequantize(batch["x"])).mean()
        opt = self.optimizers[optimizer]
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"nll": loss.detach()}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def has(self, capability: str) -> bool:
        return capability in self.capabilities
