"""Metrics: what they need, how they are computed, and the context they are computed in.

A metric is an object with ``name``, ``columns`` (column -> "higher" or "lower" is better, or
"none" for a column with no direction -- a chance level, a two-sided statistic -- never bold),
``needs`` (capabilities the model must declare), ``data_kinds``, ``estimator(profile)`` (a
string naming the estimator and its settings, stored with every result) and ``compute(ctx)``
returning ``{column: float}``.  The runner evaluates every registered metric that applies.

A metric that can tell its own value is not to be trusted (an estimator that has not converged, a
diagnostic that fails) says so with ``ctx.mark(column, reason)``: the value is kept in the record,
and every table shows it marked, with the reason in the row's notes.  A finding about the whole row
(its samples copy the training data) is ``ctx.warn(reason)``: such a row is flagged and never bold.

The model contract is enforced once, where samples are drawn for evaluation (``EvalContext.samples``)
and where exact log-likelihoods are computed: samples must be ``(n, *spec.shape)``, floating,
finite and, for images, in [0, 1]; log-likelihoods ``(n,)`` and never NaN or +inf (-inf, zero
density at a point, is an honest answer and is reported as such).  A violation raises
:class:`ContractViolation`, which fails the whole trial with one line (the runner does not keep
it as one metric's error): a model that breaks the contract has no trustworthy cell at all.
The words are those of ``genbench check`` (:func:`genbench.check.sample_violation`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch

from genbench.datasets import Dataset
from genbench.errors import GenbenchError
from genbench.model import GenerativeModel
from genbench.profiles import Profile

SAMPLE_CHUNK = 500  # samples drawn per call when a metric needs many


class ContractViolation(GenbenchError):
    """A model's output breaks the model contract during evaluation: the trial fails with this line."""


def contract_violation(model: GenerativeModel, call: str, problem: tuple[str, str]) -> ContractViolation:
    """The one line that fails a trial: the model, what was wrong, and the fix (check.py's words)."""
    what, fix = problem
    name = getattr(model, "name", "") or type(model).__name__
    return ContractViolation(f"model {name!r} breaks the model contract in {call}: {what}; fix: {fix} "
                             f"(`genbench check {name}` runs every contract check)")


def enforce_sample_contract(model: GenerativeModel, x, n: int) -> None:
    """Raise :class:`ContractViolation` unless ``x`` honours the contract of ``sample(n)``."""
    from genbench.check import sample_violation  # check imports this module: imported when used

    problem = sample_violation(x, n, model.spec)
    if problem is not None:
        raise contract_violation(model, "sample", problem)


@contextmanager
def evaluating(model: GenerativeModel) -> Iterator[GenerativeModel]:
    """The model in eval mode without gradients, its previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def draw_samples(model: GenerativeModel, n: int, generator: torch.Generator,
                 condition: torch.Tensor | None = None, device=None, contract: bool = False) -> torch.Tensor:
    """``n`` samples in eval mode, drawn ``SAMPLE_CHUNK`` at a time, as float32 on the CPU.  With a
    ``condition`` (one row per sample), each chunk gets its rows on ``device``; without one,
    ``sample`` is called without the argument.  With ``contract``, every chunk as the model returned
    it (before the conversion to float32) must honour the sample contract, else
    :class:`ContractViolation` is raised."""
    out = []
    with evaluating(model):
        for start in range(0, n, SAMPLE_CHUNK):
            k = min(SAMPLE_CHUNK, n - start)
            kwargs = {} if condition is None else {"condition": condition[start : start + k].to(device)}
            x = model.sample(k, generator=generator, **kwargs)
            if contract:
                enforce_sample_contract(model, x, k)
            out.append(x.detach().float().cpu())
    return torch.cat(out)


def held_out_condition(model_cls: type[GenerativeModel], dataset: Dataset, n: int,
                       splits: tuple[str, ...] = ("val", "test")) -> torch.Tensor | None:
    """The inputs to sample ``n`` images of a family that needs one (``model_cls.condition_key``):
    the rows of that batch key in the held-out ``splits``, in order, repeated if ``n`` exceeds
    them.  None for families that sample unconditionally (callers then leave ``condition`` out, so a
    plugin whose ``sample(n, generator)`` takes no condition keeps working)."""
    key = model_cls.condition_key
    if key is None:
        return None
    rows = []
    for split in splits:
        data = dataset.split(split)
        if key not in data:
            raise GenbenchError(
                f"{model_cls.name} samples from {key!r} inputs, which dataset {dataset.name!r} lacks; "
                f"run it on a dataset that provides them (`genbench list` shows which apply)")
        rows.append(data[key].cpu())
    pool = torch.cat(rows)
    if len(pool) == 0:
        raise GenbenchError(f"dataset {dataset.name!r} has no held-out {key!r} rows to sample {model_cls.name} from")
    reps = -(-n // len(pool))
    return pool.repeat(reps, *([1] * (pool.dim() - 1)))[:n]


class Metric:
    name: ClassVar[str] = ""
    columns: ClassVar[dict[str, str]] = {}
    needs: ClassVar[frozenset[str]] = frozenset()
    data_kinds: ClassVar[frozenset[str]] = frozenset({"image", "points"})
    dataset_needs: ClassVar[frozenset[str]] = frozenset()  # Dataset attributes that must be set

    def applies(self, model_cls: type[GenerativeModel], dataset: Dataset) -> tuple[bool, str]:
        missing = self.needs - set(model_cls.capabilities)
        if missing:
            return False, f"needs {', '.join(sorted(missing))}"
        if dataset.spec.kind not in self.data_kinds:
            return False, f"not defined for {dataset.spec.kind} data"
        for attr in self.dataset_needs:
            if getattr(dataset, attr, None) is None:
                return False, f"dataset has no {attr}"
        return True, ""

    def estimator(self, profile: Profile) -> str:
        return self.name

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement compute")


class EvalContext:
    """Everything a metric may use, with shared work (samples, extractor features) done once."""

    def __init__(self, model: GenerativeModel, dataset: Dataset, profile: Profile, seed: int, device):
        self.model = model
        self.dataset = dataset
        self.profile = profile
        self.seed = seed
        self.device = torch.device(device)
        self.memo: dict[str, Any] = {}
        self.marks: dict[str, str] = {}  # column -> why its value is not to be read as a plain number
        self.warnings: list[str] = []  # findings about the whole row (e.g. it copies training data)

    def mark(self, column: str, reason: str) -> None:
        """Say that ``column``'s value failed its own diagnostic (shown marked, never as a plain number)."""
        self.marks[column] = reason

    def warn(self, reason: str) -> None:
        """Flag the whole row (e.g. its samples copy the training data): flagged, never bold."""
        if reason not in self.warnings:
            self.warnings.append(reason)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the trial seed: every metric sees the same randomness."""
        return torch.Generator().manual_seed(10_000 + 97 * self.seed + offset)

    def samples(self, n: int) -> torch.Tensor:
        """``n`` model samples (cached: FID, IS, KID and PR share one set), on the CPU.  A family
        with a ``condition_key`` is sampled from the held-out inputs (``held_out_condition``).  The
        samples must honour the contract (see the module docstring), else the trial fails."""
        key = f"samples:{n}"
        if key not in self.memo:
            condition = held_out_condition(type(self.model), self.dataset, n)
            self.memo[key] = draw_samples(self.model, n, self.generator(), condition, self.device, contract=True)
        return self.memo[key]

    def test_points(self, n: int | None = None) -> dict[str, torch.Tensor]:
        data = self.dataset.split("test")
        n = min(n or self.profile.n_likelihood_points, len(data["x"]))
        return {k: v[:n] for k, v in data.items()}
