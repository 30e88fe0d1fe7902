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
The words are those of ``genbench check`` (:func:`genbench.contract.sample_violation`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from genbench.contract import sample_violation
from genbench.datasets import Dataset
from genbench.errors import GenbenchError, UnknownNameError
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
    problem = sample_violation(x, n, model.spec)
    if problem is not None:
        raise contract_violation(model, "sample", problem)


@contextmanager
def library_threads() -> Iterator[None]:
    """The thread pools of the libraries beside torch (NumPy's BLAS under torch-fidelity's KID and
    precision/recall, scikit-learn's k-means, SciPy) held to torch's thread count for the block.

    torch runs on the threads the trial was given (one per worker on a CPU), but OpenBLAS starts one
    thread per core on its own, and where the cores are shared its threads wait on each other: on a
    busy two-core machine KID on 350 x 447 features (50 subsets) took 1.6 s with OpenBLAS's two
    threads and 0.19 s with one."""
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    with threadpool_limits(limits=torch.get_num_threads()):
        yield


@contextmanager
def evaluating(model: GenerativeModel, no_grad: bool = True) -> Iterator[GenerativeModel]:
    """The model in eval mode (batch norm on its running statistics) for the block, its previous
    mode restored afterwards; without gradients unless ``no_grad=False`` (AIS's HMC and the q* fit
    differentiate through the model)."""
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not no_grad):
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


# Evaluation seconds a metric may take per trial before the trial counts as hung, by profile, for a
# metric that does not say (``Metric.allowance_s``); a trial's allowance is the sum over its metrics.
DEFAULT_ALLOWANCE_S = {"test": 60.0, "quick": 300.0, "standard": 3600.0}
UNKNOWN_PROFILE_ALLOWANCE_S = 600.0


class Metric:
    """A metric: see the module docstring.  What it owns, so that adding one edits nothing else:

    * ``columns`` -- column -> direction ("higher", "lower", "none");
    * ``headline`` -- column -> rank, for the columns a reader looks for first: terminal, CSV and
      page put the present headline columns in rank order (lower first) before every other column;
    * ``Settings`` -- a dataclass of the metric's own settings (its defaults are the quick
      profile's), and ``profile_settings`` -- profile name -> the fields that differ there;
      ``settings(profile)`` is the instance for a profile (what ``compute`` and ``estimator`` read).
      What every metric shares (sample counts, test points) stays in :class:`genbench.profiles.Profile`;
    * ``allowance_s`` -- profile name -> evaluation seconds it may take per trial (else
      :data:`DEFAULT_ALLOWANCE_S`); a trial's evaluation limit is the sum over its metrics.
    """

    name: ClassVar[str] = ""
    columns: ClassVar[dict[str, str]] = {}
    headline: ClassVar[dict[str, int]] = {}
    Settings: ClassVar[type | None] = None
    profile_settings: ClassVar[dict[str, dict[str, Any]]] = {}
    allowance_s: ClassVar[dict[str, float]] = {}
    needs: ClassVar[frozenset[str]] = frozenset()
    data_kinds: ClassVar[frozenset[str]] = frozenset({"image", "points"})
    dataset_needs: ClassVar[frozenset[str]] = frozenset()  # Dataset attributes that must be set
    # What a model needs, in words, for a metric whose ``applies`` decides more than ``needs`` says
    # (shown by `genbench list`; empty: the capabilities in ``needs``)
    requirement: ClassVar[str] = ""

    @classmethod
    def settings(cls, profile: Profile | str):
        """This metric's settings under ``profile`` (a Profile or its name): ``Settings`` with the
        profile's entry of ``profile_settings`` over its defaults; None for a metric without any.
        In ``compute``, read them through ``ctx.settings_of(self)`` (a caller may have set others)."""
        if cls.Settings is None:
            return None
        name = profile if isinstance(profile, str) else profile.name
        return cls.Settings(**cls.profile_settings.get(name, {}))

    def allowance(self, profile: str) -> float:
        """Evaluation seconds this metric may take per trial under ``profile``."""
        if profile in self.allowance_s:
            return float(self.allowance_s[profile])
        return DEFAULT_ALLOWANCE_S.get(profile, UNKNOWN_PROFILE_ALLOWANCE_S)

    def needs_text(self) -> str:
        """What a model needs for this metric: ``requirement``, else the capabilities in ``needs``."""
        return self.requirement or ", ".join(sorted(self.needs))

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

    def applies_in(self, ctx: EvalContext) -> tuple[bool, str]:
        """Whether the metric runs in this evaluation (its profile, its data), and if not, why: for a
        metric whose protocol leaves some data to another profile (AIS above a dimension).  The
        reason goes into the row's empty cells, as that of a metric that does not apply."""
        return True, ""

    def estimator(self, profile: Profile) -> str:
        return self.name

    def prepare(self, dataset: Dataset, profile: Profile, device) -> None:
        """One-off work that every trial on ``dataset`` shares and that is cached on disk or in the
        process (a classifier trained on first use, reference statistics).  The runner calls it
        before the trial's evaluation clock starts and records its time apart
        (``timings["prepare"]``), so a cold cache is not read as the cost of evaluating the first
        model that meets it.  The default does nothing."""

    def compute(self, ctx: EvalContext) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement compute")


@dataclass(frozen=True)
class MetricSelection:
    """Which metrics score a trial (``--metrics`` and ``--skip-metrics``): the metrics named in
    ``only`` (every metric when it is empty) less those in ``skip``, by metric name, sorted.

    The selection is part of the trial: of its key (a trial scored by fewer metrics is not the
    trial scored by all of them) and of its record (``metric_selection``), and a metric it leaves
    out has its cells empty with the reason in ``not_applicable``, as a metric that does not apply.
    Model selection during training is not affected."""

    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.only and not self.skip

    def why_left_out(self, name: str) -> str | None:
        """Why metric ``name`` is not evaluated under this selection (None: it is)."""
        if self.only and name not in self.only:
            return "not selected by --metrics"
        if name in self.skip:
            return "skipped by --skip-metrics"
        return None

    def as_dict(self) -> dict:
        """The form stored in a record: ``{"metrics": [...] or None (every metric), "skip_metrics": [...]}``."""
        return {"metrics": list(self.only) or None, "skip_metrics": list(self.skip)}


EVERY_METRIC = MetricSelection()  # the default: a trial scored by every metric that applies


def select_metrics(metrics, only: str | Iterable[str] | None = None,
                   skip: str | Iterable[str] | None = None) -> MetricSelection:
    """The :class:`MetricSelection` of ``--metrics only`` and ``--skip-metrics skip`` (each a
    comma-separated string or a list of names) among the registered ``metrics`` (the manager's
    metric registry).  A name is a metric's name as `genbench list` shows it (``sample_quality``,
    ``ais``, ``posterior_gaps``) or one of its columns, which stands for the metric that computes it
    (``fid`` selects ``sample_quality``).  An unknown name raises :class:`UnknownNameError` naming
    the known metrics."""
    owners: dict[str, set[str]] = {}  # column -> the metrics that declare it
    for metric in metrics.values():
        for column in metric.columns:
            owners.setdefault(column, set()).add(metric.name)

    def resolve(names, flag: str) -> tuple[str, ...]:
        if names is None:
            return ()
        given = names.split(",") if isinstance(names, str) else list(names)
        given = [str(n).strip() for n in given if str(n).strip()]
        if not given:
            raise GenbenchError(f"{flag} names no metric; give metric names separated by commas, e.g. "
                                f"{flag} sample_quality,parzen (`genbench list` shows the metrics)")
        chosen = set()
        for name in given:
            if name in metrics:
                chosen.add(name)
            elif len(owners.get(name, ())) == 1:
                chosen.update(owners[name])
            else:
                why = (f"column {name!r} is computed by several metrics ({', '.join(sorted(owners[name]))}); "
                       "name the metric" if name in owners else f"unknown metric {name!r}")
                raise UnknownNameError(f"{flag}: {why}; known metrics: {', '.join(metrics)} (a column such as "
                                       "fid stands for the metric that computes it)")
        return tuple(sorted(chosen))

    selection = MetricSelection(resolve(only, "--metrics"), resolve(skip, "--skip-metrics"))
    if selection.only and set(selection.only) <= set(selection.skip):
        raise GenbenchError(f"--skip-metrics leaves none of --metrics {', '.join(selection.only)} to evaluate")
    return selection


def prepare_metrics(metrics, model_cls: type[GenerativeModel], dataset: Dataset, profile: Profile,
                    device) -> dict[str, float]:
    """``prepare`` of every metric in ``metrics`` that applies to ``model_cls`` on ``dataset`` and
    defines one: wall seconds (``time.perf_counter``) per metric.  Preparing only moves work ahead of
    the clock: a prepare that raises is not an error of its own, since ``compute`` does the same work
    again (from the cache where the prepare succeeded) and a failure there is the metric's error."""
    seconds = {}
    with library_threads():
        for metric in metrics:
            if type(metric).prepare is Metric.prepare or not metric.applies(model_cls, dataset)[0]:
                continue
            start = time.perf_counter()
            try:
                metric.prepare(dataset, profile, torch.device(device))
            except Exception:  # compute meets the same problem and records it as this metric's error
                pass
            seconds[metric.name] = time.perf_counter() - start
    return seconds


class EvalContext:
    """Everything a metric may use, with shared work (samples, extractor features) done once."""

    def __init__(self, model: GenerativeModel, dataset: Dataset, profile: Profile, seed: int, device,
                 settings: dict[str, Any] | None = None):
        self.model = model
        self.dataset = dataset
        self.profile = profile
        self.settings = dict(settings or {})  # metric name -> its Settings instance, where not the profile's
        self.seed = seed
        self.device = torch.device(device)
        self.memo: dict[str, Any] = {}
        self.marks: dict[str, str] = {}  # column -> why its value is not to be read as a plain number
        self.warnings: list[str] = []  # findings about the whole row (e.g. it copies training data)
        self.seconds: dict[str, float] = {}  # metric name -> wall seconds of its compute (see ``timed``)

    def settings_of(self, metric: Metric | type[Metric]):
        """The settings ``metric`` computes with here: those given for its name when the context was
        made (a study of the estimator, a test), else its own for the profile (``Metric.settings``)."""
        if metric.name in self.settings:
            return self.settings[metric.name]
        return metric.settings(self.profile)

    def mark(self, column: str, reason: str) -> None:
        """Say that ``column``'s value failed its own diagnostic (shown marked, never as a plain number)."""
        self.marks[column] = reason

    def warn(self, reason: str) -> None:
        """Flag the whole row (e.g. its samples copy the training data): flagged, never bold."""
        if reason not in self.warnings:
            self.warnings.append(reason)

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall time (``time.perf_counter``) of the block to ``seconds[name]``, also when it
        raises.  Work shared through ``memo`` is paid by the first metric that asks for it: the AIS
        metric's run is not counted again in the posterior gaps that reuse it."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

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
