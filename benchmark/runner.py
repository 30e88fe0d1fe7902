"""Trials and suites: train each model under the budget, evaluate it, record the result.

A trial is (model, dataset, seed, budget, profile, config).  :func:`perform_trial` runs one trial
wherever it is called -- in the runner's own process (``--executor inline``), in a long-lived
worker process (the default, see :mod:`genbench.executors`) or in a Ray task -- and turns every
fault of the model (an exception, a non-finite loss, running out of memory) into a failed record
with its reason.  Faults that kill or hang the process are caught one level up, by the executor.
While a trial trains it checkpoints at fractions of its budget (:mod:`genbench.checkpoint`), so an
interrupted trial continues instead of starting again.  At fractions of its budget it also scores
a validation criterion, outside the budget, and it is evaluated at its best-on-validation state
(:mod:`genbench.selection`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import math
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.distributions import Distribution

import genbench
from genbench.budget import Budget, BudgetMeter
from genbench.checkpoint import Checkpointer, ResumableBatches, checkpoint_path
from genbench.datasets import Dataset
from genbench.errors import NonFiniteLossError
from genbench.grids import save_samples
from genbench.manager import PluginManager
from genbench.metrics import (
    EVERY_METRIC,
    ContractViolation,
    EvalContext,
    MetricSelection,
    library_threads,
    prepare_metrics,
)
from genbench.model import GenerativeModel
from genbench.profiles import Profile, get_profile
from genbench.results import (
    RECORD_SCHEMA,
    atomic_write_text,
    git_commit,
    keep_unsaved,
    record_path,
    unsaved_dir,
    write_advice,
    write_error,
    write_record,
)
from genbench.selection import Selector
from genbench.weights import save_weights, weights_state


@dataclass(frozen=True)
class Trial:
    model: str
    dataset: str
    seed: int
    budget: Budget
    profile: str = "quick"
    config: dict = field(default_factory=dict, hash=False)  # overrides of the family's defaults
    metric_selection: MetricSelection = EVERY_METRIC  # --metrics / --skip-metrics

    def key(self, model_cls: type[GenerativeModel]) -> str:
        """Hash of everything that determines the result: rerunning the same key is skipped.  A
        metric selection is part of it (a trial scored by fewer metrics is another trial); scored by
        every metric, a trial keeps the key it had before selections existed."""
        cfg = dataclasses.asdict(model_cls.make_config(self.config))
        what = {"model": self.model, "dataset": self.dataset, "seed": self.seed,
                "budget": [self.budget.kind, self.budget.amount], "profile": self.profile,
                "config": cfg, "schema": RECORD_SCHEMA}
        if not self.metric_selection.everything:
            what["metric_selection"] = self.metric_selection.as_dict()
        blob = json.dumps(what, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def trial_id(self, model_cls) -> str:
        """The trial's file name (without ``.json``), built only from validated names: a model or
        dataset name with a path separator, ``..`` or other characters is refused here too, not
        only where it is registered."""
        from genbench.errors import GenbenchError
        from genbench.manager import NAME_PATTERN, NAME_RULE

        for kind, name in (("model", self.model), ("dataset", self.dataset)):
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                raise GenbenchError(f"{kind} name {name!r} cannot name a trial file: a {kind} name is made of "
                                    f"{NAME_RULE}")
        if not all(c.isascii() and (c.isalnum() or c in ".+- ") for c in self.budget.text):
            raise GenbenchError(f"budget {self.budget.text!r} cannot name a trial file")
        return f"{self.model}--{self.dataset}--{self.budget.text}--seed{self.seed}--{self.key(model_cls)[:8]}"


def resolve_device(name: str = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N, a CUDA device only where one is present (GenbenchError naming
    the fix otherwise), so a typo costs one line before any trial starts."""
    import re

    from genbench.errors import GenbenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", str(name))
    if not m:
        raise GenbenchError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise GenbenchError(f"--device {name}: no CUDA device is available here; use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if int(m.group(1) or 0) >= count:
        raise GenbenchError(f"--device {name}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def versions() -> dict:
    import torch_fidelity

    return {"genbench": genbench.__version__, "git_commit": git_commit(), "torch": torch.__version__,
            "torch_fidelity": torch_fidelity.__version__, "python": platform.python_version()}


def batch_size_of(model: GenerativeModel) -> int:
    return int(getattr(model.config, "batch_size", model.batch_size))


LOSS_CHECK_EVERY = 50  # steps whose tensor losses are read together: one wait for the device per 50 steps


class LossWatch:
    """The non-finite check of the losses that ``train_step`` returns, without reading every loss
    every step.

    Reading a tensor loss (``float(loss)``, ``loss.item()``) waits for the device to finish the
    step (a host sync on CUDA, which stalls the queue of the next step).  So tensor losses are kept,
    detached, and read together: every ``every`` steps, before the model is scored or checkpointed
    (neither should see a diverged model), when a step raises, and at the end.  Float losses are
    checked at once.  Either way the error names the first step whose loss was not finite, and
    training stops at most ``every`` steps after it."""

    def __init__(self, every: int = LOSS_CHECK_EVERY):
        self.every = every
        self.pending: list[tuple[int, dict]] = []  # (step, losses) with tensors not read yet

    def add(self, step: int, losses: dict) -> dict:
        """``losses`` of step number ``step`` with its tensors detached; raises for a non-finite
        float at once."""
        if not isinstance(losses, dict):
            raise TypeError(f"train_step returned {type(losses).__name__}, not a dict of named losses "
                            "(floats or 0-dim tensors)")
        out, bad, tensors = {}, {}, False
        for k, v in losses.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    raise TypeError(f"train_step returned loss {k!r} as a tensor of shape {tuple(v.shape)}; "
                                    "return one number per loss: a 0-dim tensor (loss.detach()) or a float")
                v, tensors = v.detach(), True
            elif not math.isfinite(v):  # a TypeError for anything but a number
                bad[k] = v
            out[k] = v
        if tensors:
            self.pending.append((step, out))
        if bad:
            self.check()  # a tensor loss of an earlier step may have gone first
            raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}")
        if len(self.pending) >= self.every:
            self.check()
        return out

    def check(self) -> None:
        """Read the pending tensor losses (one wait per device); raise for the first non-finite."""
        pending, self.pending = self.pending, []
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for _, losses in pending:
            for v in losses.values():
                if isinstance(v, torch.Tensor):
                    by_device.setdefault(v.device, []).append(v.reshape(()))
        if all(bool(torch.stack(vs).isfinite().all()) for vs in by_device.values()):
            return
        for step, losses in pending:
            bad = {k: float(v) for k, v in losses.items() if not math.isfinite(float(v))}
            if bad:
                raise NonFiniteLossError(f"non-finite loss at step {step}: {bad}")


CURVE_POINTS = 1000  # at most this many steps of a trial's losses are kept for its curves.csv


class LossCurve:
    """The losses of a trial's training steps, thinned to at most ``limit`` points: every step at
    first, and whenever the curve is full every other point is dropped and from then on every
    2nd, 4th, ... step is kept, so the whole run is covered evenly in bounded memory.

    Tensor losses are kept detached and read only when the curve is saved (:meth:`state`, for a
    checkpoint) or written (:meth:`frame`): reading a tensor waits for the device (see
    :class:`LossWatch`)."""

    def __init__(self, limit: int = CURVE_POINTS):
        self.limit, self.every = limit, 1
        self.points: list[tuple[int, float, dict]] = []  # (step, progress, losses)

    def add(self, step: int, progress: float, losses: dict) -> None:
        if step % self.every:
            return
        self.points.append((step, progress, losses))
        if len(self.points) > self.limit:
            self.every *= 2
            self.points = [p for p in self.points if p[0] % self.every == 0]

    def _read(self) -> list[tuple[int, float, dict]]:
        return [(step, progress, {k: float(v) for k, v in losses.items()}) for step, progress, losses in self.points]

    def state(self) -> dict:
        """Plain numbers, for a checkpoint (an interrupted trial's curve continues where it was)."""
        self.points = self._read()
        return {"every": self.every, "points": [[s, p, losses] for s, p, losses in self.points]}

    def load_state(self, state: dict) -> None:
        self.every = int(state["every"])
        self.points = [(int(s), float(p), dict(losses)) for s, p, losses in state["points"]]

    def frame(self):
        """Columns step, progress and each loss name (in the order the model first returned them)."""
        import pandas as pd

        rows = [{"step": s, "progress": p, **losses} for s, p, losses in self._read()]
        names = list(dict.fromkeys(k for _, _, losses in self.points for k in losses))
        return pd.DataFrame(rows, columns=["step", "progress", *names])


@contextlib.contextmanager
def unchecked_distributions():
    """torch.distributions without argument validation while a model trains.

    With validation on (torch's default), building a distribution checks each parameter against
    its constraint and ``log_prob`` checks each value against the support: a few extra ops and a
    read of their result (a host sync on CUDA) every time, and a latent-variable model builds
    q(z|x), p(x|z) and p(z) every step.  The checks are for writing a model, not for timing one:
    ``genbench check`` calls ``train_step`` outside this, with torch's default, so an author still
    sees them, and a distribution built with ``validate_args=True`` validates here too."""
    before = Distribution._validate_args  # the class-wide default that set_default_validate_args sets
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(before)


def train(model: GenerativeModel, dataset: Dataset, budget: Budget, seed: int, device: torch.device,
          on_step: Callable[[float, dict], None] | None = None, checkpoint: Checkpointer | None = None,
          selector: Selector | None = None, curve: LossCurve | None = None):
    """The training loop: draw a batch, take one step, account the budget, stop when spent.

    With a ``checkpoint``, training first continues from its saved state (if there is one) and
    saves at the checkpointer's fractions of the budget.  With a ``selector``, a validation
    criterion is scored at its fractions of the budget, outside the budget (only what runs inside
    ``meter.step()`` is counted), and the model ends in its best-on-validation state.

    ``train_step`` returns its losses as floats or 0-dim tensors; tensors are read only where they
    are needed (:class:`LossWatch`, and ``on_step``, which gets them as returned and converts what
    it shows).  With a ``curve``, every step's losses are added to it (it thins them).  Returns the
    budget's usage and the last step's losses as floats."""
    meter = BudgetMeter(budget, device)
    if selector is not None:
        selector.prepare(model, dataset, device)
    if checkpoint is not None:
        batches = checkpoint.restore(model, meter, dataset, batch_size_of(model), seed, selector, curve)
    else:
        batches = ResumableBatches(dataset, batch_size_of(model), seed)
    watch = LossWatch()
    losses: dict = {}
    model.train()
    with unchecked_distributions():
        while not meter.exhausted():
            batch = next(batches)
            try:
                with meter.step():
                    returned = model.train_step(batch, meter.progress())
            except Exception:
                watch.check()  # a step that fails after a non-finite loss fails because of it
                raise
            losses = watch.add(meter.usage.steps, returned)
            if curve is not None:
                curve.add(meter.usage.steps, meter.progress(), losses)
            if budget.kind == "flops" and meter.usage.flops == 0:
                raise NonFiniteLossError("a FLOP budget needs steps that do matmuls or convolutions; "
                                         "this model's step counted 0 FLOPs: use a seconds or steps budget")
            if on_step is not None:
                on_step(meter.progress(), losses)
            if selector is not None:  # outside meter.step(): selection costs no budget
                if selector.due(meter.progress()):
                    watch.check()
                selector.maybe_score(model, meter.usage.steps, meter.progress())
            if checkpoint is not None:
                if checkpoint.due(meter.progress()):
                    watch.check()
                checkpoint.maybe_save(model, meter, batches, selector, curve)
    watch.check()
    if selector is not None:  # evaluate the best-on-validation state, not the last
        selector.restore_best(model)
    return meter.finish(), {k: float(v) for k, v in losses.items()}


def evaluate(model: GenerativeModel, dataset: Dataset, manager: PluginManager, profile: Profile,
             seed: int, device: torch.device, on_metric: Callable[[str], None] | None = None,
             selection: MetricSelection = EVERY_METRIC):
    """Every registered metric that applies and that ``selection`` keeps (a metric that does not,
    either, is in ``not_applicable`` with its reason); a metric that raises is recorded, not fatal.  Each
    metric's wall time is in ``ctx.seconds`` (:meth:`genbench.metrics.EvalContext.timed`); NumPy's
    and scikit-learn's thread pools keep to torch's thread count (:func:`genbench.metrics.library_threads`)."""
    ctx = EvalContext(model, dataset, profile, seed, device)
    values, estimators, not_applicable, errors = {}, {}, {}, {}
    with library_threads():
        for metric in manager.metrics.values():
            ok, why = metric.applies(type(model), dataset)
            if ok:
                ok, why = metric.applies_in(ctx)
            left_out = selection.why_left_out(metric.name)
            if not ok or left_out:  # a metric that would not apply anyway keeps that reason
                not_applicable[metric.name] = why if not ok else left_out
                continue
            if on_metric is not None:
                on_metric(metric.name)
            try:
                with ctx.timed(metric.name):
                    values.update(metric.compute(ctx))
                estimators[metric.name] = metric.estimator(profile)
            except ContractViolation:  # the model broke its contract: no metric of it stands, the trial fails
                raise
            except Exception as exc:
                errors[metric.name] = f"{type(exc).__name__}: {exc}"
    # A column belongs to the metric that declares it: where the selection leaves that metric out,
    # a metric that reports the same figure beside its own (posterior_gaps its AIS run as "ais")
    # does not fill the cell, so a skipped metric never seems to have scored the trial.
    withheld = {c for m in manager.metrics.values() if selection.why_left_out(m.name) for c in m.columns}
    values = {c: v for c, v in values.items() if c not in withheld}
    ctx.marks = {c: why for c, why in ctx.marks.items() if c not in withheld}
    return values, estimators, not_applicable, errors, ctx


def score_model(model: GenerativeModel, dataset: Dataset, manager: PluginManager, profile: Profile, seed: int,
                device: torch.device, selection: MetricSelection = EVERY_METRIC,
                on_metric: Callable[[str], None] | None = None) -> dict:
    """Evaluate a trained ``model`` as a trial's record holds it: the metrics' one-off preparation
    (timed apart), then :func:`evaluate`.  Returns the record's fields ``metrics``, ``estimators``,
    ``not_applicable``, ``metric_errors``, ``extractor``, ``marks``, ``warnings`` and ``timings``
    (``prepare``, ``prepare_s``, ``eval_s``, ``eval_cpu_s`` and per metric ``metrics``).  The one
    evaluation of genbench: after training (:func:`perform_trial`) and from kept weights
    (:mod:`genbench.weights`)."""
    timings: dict = {}
    # one-off work shared by every trial on the dataset (a classifier trained on first use), timed apart
    selected = [m for m in manager.metrics.values() if selection.why_left_out(m.name) is None]
    prepared = prepare_metrics(selected, type(model), dataset, profile, device)
    timings["prepare"] = prepared
    timings["prepare_s"] = sum(prepared.values())
    t1, cpu1 = time.perf_counter(), time.process_time()
    values, estimators, not_applicable, errors, ctx = evaluate(
        model, dataset, manager, profile, seed, device, on_metric, selection)
    timings["eval_s"] = time.perf_counter() - t1
    # the same span in CPU time of this process (all its threads): the clock of a CPU seconds
    # budget, so that evaluation and training compare on one clock where the core was shared
    timings["eval_cpu_s"] = time.process_time() - cpu1
    timings["metrics"] = dict(ctx.seconds)  # per metric, wall seconds like train_s and eval_s
    return {"metrics": values, "estimators": estimators, "not_applicable": not_applicable, "metric_errors": errors,
            "extractor": ctx.memo.get("extractor"), "marks": dict(ctx.marks), "warnings": list(ctx.warnings),
            "timings": timings}


def base_record(trial: Trial, model_cls, manager: PluginManager, suite: str, device: torch.device) -> dict:
    return {
        "schema": RECORD_SCHEMA, "suite": suite, "trial_id": trial.trial_id(model_cls),
        "model": trial.model, "family": model_cls.family, "plugin": manager.plugin_of("model", trial.model),
        "dataset": trial.dataset, "seed": trial.seed, "profile": trial.profile,
        "budget": {"kind": trial.budget.kind, "amount": trial.budget.amount, "text": trial.budget.text},
        "used": {"seconds": 0.0, "steps": 0, "flops": 0.0, "flops_exact": False, "overrun": 0.0},
        "config_hash": trial.key(model_cls), "config": {}, "status": "failed", "reason": None,
        "metric_selection": trial.metric_selection.as_dict(),
        "metrics": {}, "estimators": {}, "not_applicable": {}, "metric_errors": {}, "extractor": None,
        "marks": {}, "warnings": [],
        "timings": {}, "device": device_label(device), "versions": versions(),
        "command": " ".join(["genbench", *sys.argv[1:]]) if sys.argv else "",
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
    }


def describe_exception(exc: BaseException) -> tuple[str, str]:
    """(fault kind, reason) of an exception raised by a trial: memory exhaustion reads as
    "out of memory" whichever allocator noticed it (Python, torch's CPU allocator, CUDA)."""
    text = f"{type(exc).__name__}: {exc}"
    oom_markers = ("can't allocate memory", "Cannot allocate memory", "out of memory", "std::bad_alloc")
    if isinstance(exc, MemoryError) or any(m in str(exc) for m in oom_markers):
        return "oom", f"out of memory: {text}"[:2000]
    if isinstance(exc, NonFiniteLossError):
        return "non_finite", text
    return "exception", text[:2000]


def perform_trial(trial: Trial, manager: PluginManager, load_dataset: Callable[[str], Dataset],
                  device: torch.device, out_dir: Path, suite: str, *, checkpoint_dir: Path | None = None,
                  checkpoint_every: float = 0.25, on_phase: Callable[[str], None] | None = None,
                  on_train: Callable | None = None, on_metric: Callable | None = None,
                  keep_weights: bool = False) -> dict:
    """Build, train and evaluate one trial and return its record (not written: the caller writes it).

    With ``keep_weights``, a finished trial's state as it was evaluated (its best-on-validation
    state) is written to ``<out_dir>/weights/<trial_id>.pt`` and named in ``record["weights"]``
    (:mod:`genbench.weights`), so ``genbench evaluate`` can score it again without training.

    Never raises for a fault of the model or its data: the record's ``status`` is "failed" with
    ``reason`` and ``fault`` ("exception", "non_finite", "oom").  ``on_phase`` is told "setup",
    "train" and "eval" as the trial enters each (executors time each phase separately)."""
    model_cls = manager.models.get(trial.model)
    profile = get_profile(trial.profile)
    record = base_record(trial, model_cls, manager, suite, device)
    curve = LossCurve()
    try:
        if on_phase is not None:
            on_phase("setup")
        dataset = load_dataset(trial.dataset)
        config = model_cls.make_config(trial.config)
        record["config"] = dataclasses.asdict(config)
        torch.manual_seed(trial.seed)
        model = model_cls(config, dataset.spec).to(device)
        checkpoint = None
        if checkpoint_dir is not None:
            path = checkpoint_path(checkpoint_dir, record["trial_id"])
            checkpoint = Checkpointer(path, record["config_hash"], checkpoint_every)
        # the criterion's one-off work (validation points, feature extractor) before training starts
        selector = Selector.for_trial(model, dataset, trial.profile)
        selector.prepare(model, dataset, device)
        if on_phase is not None:
            on_phase("train")
        t0 = time.perf_counter()
        usage, losses = train(model, dataset, trial.budget, trial.seed, device, on_train, checkpoint, selector,
                              curve)
        record["used"] = usage.as_dict()
        record["final_losses"] = losses  # of the last step, whichever state was chosen
        record["selection"] = selector.summary()
        record["timings"]["train_s"] = time.perf_counter() - t0  # includes select_s
        record["timings"]["select_s"] = selector.seconds
        if checkpoint is not None and checkpoint.resumed_from is not None:
            record["resumed_from"] = checkpoint.resumed_from
        if checkpoint is not None and checkpoint.error:
            record["checkpoint_error"] = checkpoint.error
        if checkpoint is not None and checkpoint.discarded:
            record["checkpoint_discarded"] = checkpoint.discarded  # in the record, not only the worker log
        if on_phase is not None:
            on_phase("eval")
        evaluated_state = weights_state(model) if keep_weights else None  # before any metric runs
        scored = score_model(model, dataset, manager, profile, trial.seed, device, trial.metric_selection, on_metric)
        timings = scored.pop("timings")
        record.update(scored)
        record["estimators"] = {**scored["estimators"], "selection": selector.estimator()}
        record["timings"].update(timings)
        samples = out_dir / "samples" / f"{record['trial_id']}.png"
        try:
            save_samples(model, dataset, samples, trial.seed)
            record["samples"] = str(samples.relative_to(out_dir))
        except OSError as exc:  # a full disk must not throw away a trained and evaluated trial
            record["samples"] = None
            record["samples_error"] = write_error(exc, samples)
        if evaluated_state is not None:
            save_weights(evaluated_state, record, out_dir)
        record["status"] = "ok"
    except Exception as exc:
        record["fault"], record["reason"] = describe_exception(exc)
        record["traceback"] = traceback.format_exc(limit=-6)
    if curve.points:  # a failed trial's curve too: it shows where the losses went
        write_curve(curve, out_dir, record)
    record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    return record


def write_curve(curve: LossCurve, out_dir: Path, record: dict) -> None:
    """The trial's training curves as ``<suite>/curves/<trial_id>.csv`` (beside ``samples/``), its
    path in ``record["curves"]``; a failed write costs the file (``curves_error``), not the trial."""
    path = out_dir / "curves" / f"{record['trial_id']}.csv"
    try:
        atomic_write_text(path, curve.frame().to_csv(index=False))
        record["curves"] = str(path.relative_to(out_dir))
    except OSError as exc:
        record["curves"], record["curves_error"] = None, write_error(exc, path)
    except Exception as exc:  # a loss that cannot be read back (the device failed): the record says so
        record["curves"], record["curves_error"] = None, f"{type(exc).__name__}: {exc}"


def run_trial(trial: Trial, manager: PluginManager, dataset: Dataset, device: torch.device, out_dir: Path,
              suite: str, on_train: Callable | None = None, on_metric: Callable | None = None) -> dict:
    """Train and evaluate one trial in this process, write its record and call the observer
    hooks; never raises for a fault of the model: the record says it."""
    manager.hook.trial_started(trial=trial)
    record = perform_trial(trial, manager, lambda _name: dataset, device, out_dir, suite,
                           on_train=on_train, on_metric=on_metric)
    problem = store_record(out_dir.parent, suite, record)
    if problem is not None:
        import warnings

        warnings.warn(problem, stacklevel=2)
    manager.hook.trial_finished(trial=trial, record=record)
    return record


def store_record(runs_dir: Path, suite: str, record: dict) -> str | None:
    """Write ``record`` into ``<runs>/<suite>/trials/``; where that fails, keep it in its fallback
    file (:func:`genbench.results.keep_unsaved`, moved back by the next run of the suite).

    Returns None when the record is in the runs folder, else the one line that says why it is not
    and where it is kept; never raises for a failed write."""
    path = record_path(runs_dir, suite, record["trial_id"])
    try:
        write_record(path, record)
        return None
    except OSError as exc:
        reason, advice = write_error(exc, path), write_advice(exc)
    try:
        kept = keep_unsaved(runs_dir, suite, record)
    except OSError as exc2:
        return (f"{reason}: the result of {record['trial_id']} could not be kept anywhere "
                f"({write_error(exc2, unsaved_dir(runs_dir, suite))}); {advice} and run the same command "
                "again to run it again")
    return f"{reason}: the result of {record['trial_id']} is kept in {kept}; {advice} and run the same command again"
