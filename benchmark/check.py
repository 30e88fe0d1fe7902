"""`genbench check MODEL`: does a model family honour the contract?  A micro-budget run.

For each model (on one dataset per data kind it models, or the ones named) it checks, in order:

config        the config dataclass builds with its defaults
build         the model builds on the dataset's spec, has parameters, and keeps its optimisers in
              ``self.optimizers`` (a dict of torch optimisers, which checkpoints save)
train_step    a few steps through the runner's batches return dicts of finite losses (floats or
              detached 0-dim tensors) and change the parameters
sample        ``sample(n, generator)`` returns ``(n, *spec.shape)`` floating, finite values (in
              [0, 1] for image data) and draws all its noise from ``generator``
capabilities  what the class declares is there and well formed: LOG_LIKELIHOOD -> ``(n,)``
              finite log-densities; LATENT -> ``encode``/``decode``/``prior`` return torch
              Distributions with consistent batch and event shapes; DECODER -> ``decode``/
              ``prior``; TRANSLATE -> ``translate(x, source, target)``; CONDITIONAL -> ``sample``
              takes ``condition``
determinism   two builds with the same seed and the same steps give the same samples
checkpoint    the state (model and optimisers) survives ``torch.save`` / ``torch.load(...,
              weights_only=True)`` into a fresh model: same samples, and the same next step

Every failure says how to fix it.  The exit code is 1 when anything failed.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from genbench.checkpoint import ResumableBatches
from genbench.contract import finite as _finite
from genbench.contract import log_likelihood_violation, sample_violation
from genbench.errors import GenbenchError
from genbench.metrics import held_out_condition
from genbench.model import Capability, GenerativeModel

SAMPLE_N = 16
PREFERRED = ("digits", "ring8")  # small embedded datasets: checks take seconds


@dataclass
class CheckResult:
    model: str
    dataset: str
    check: str
    ok: bool
    detail: str = ""
    fix: str = ""


class CheckFailed(Exception):
    def __init__(self, detail: str, fix: str):
        super().__init__(detail)
        self.detail, self.fix = detail, fix


def _require(cond: bool, detail: str, fix: str) -> None:
    if not cond:
        raise CheckFailed(detail, fix)


def _overridden(model_cls: type, method: str) -> bool:
    return getattr(model_cls, method) is not getattr(GenerativeModel, method)


def _is_dist(value) -> bool:
    return isinstance(value, torch.distributions.Distribution)


def _require_none(problem: tuple[str, str] | None) -> None:
    if problem is not None:
        raise CheckFailed(*problem)


def _brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 300 else text[:297] + "..."


class ModelChecker:
    """Runs the checks for one model on one dataset."""

    def __init__(self, model_cls: type[GenerativeModel], dataset, steps: int = 4, device="cpu",
                 config: dict | None = None):
        self.cls, self.dataset, self.steps = model_cls, dataset, steps
        self.config = dict(config or {})  # overrides of the family's defaults (`--set`)
        self.device = torch.device(device)
        self.spec = dataset.spec
        self.results: list[CheckResult] = []
        self.trained: GenerativeModel | None = None  # built with seed 0 and trained ``steps`` steps

    # --- helpers ---

    def record(self, check: str, fn: Callable[[], str | None]) -> bool:
        try:
            detail = fn() or ""
        except CheckFailed as exc:
            self.results.append(CheckResult(self.cls.name, self.spec.name, check, False, exc.detail, exc.fix))
            return False
        except Exception as exc:
            self.results.append(CheckResult(self.cls.name, self.spec.name, check, False, _brief(exc),
                                            FIXES.get(check, "see the traceback with --executor inline")))
            return False
        self.results.append(CheckResult(self.cls.name, self.spec.name, check, True, detail))
        return True

    def skip(self, check: str, why: str) -> None:
        self.results.append(CheckResult(self.cls.name, self.spec.name, check, False, f"not run: {why}",
                                        "fix the earlier failure first"))

    def build(self, seed: int = 0) -> GenerativeModel:
        torch.manual_seed(seed)
        return self.cls(self.cls.make_config(self.config), self.spec).to(self.device)

    def train(self, model: GenerativeModel, validate: bool = False) -> list[dict]:
        """``steps`` steps through the runner's batch stream, with the runner's ``progress``."""
        from genbench.runner import batch_size_of

        batches = ResumableBatches(self.dataset, batch_size_of(model), seed=0)
        out = []
        model.train()
        for step in range(self.steps):
            losses = model.train_step(next(batches), step / self.steps)
            if validate:
                self.validate_losses(losses, step)
            out.append(losses)
        return out

    @torch.no_grad()
    def samples(self, model: GenerativeModel, n: int = SAMPLE_N, seed: int = 123) -> torch.Tensor:
        model.eval()
        try:
            cond = held_out_condition(type(model), self.dataset, n, splits=("test",))
            kwargs = {} if cond is None else {"condition": cond.to(self.device)}
            return model.sample(n, generator=torch.Generator().manual_seed(seed), **kwargs)
        finally:
            model.train()

    def test_x(self, n: int = 8) -> torch.Tensor:
        x = self.dataset.split("test")["x"][:n].to(self.device)
        return self.spec.dequantize(x, torch.Generator(device=x.device).manual_seed(0))

    # --- the checks ---

    def validate_losses(self, losses, step: int) -> None:
        _require(isinstance(losses, dict) and len(losses) > 0,
                 f"train_step returned {type(losses).__name__} {losses!r:.80} at step {step}",
                 "return a non-empty dict of named losses, e.g. {'loss': loss.detach()}")
        for k, v in losses.items():
            _require(isinstance(k, str), f"loss name {k!r} is not a string", "name each loss with a string key")
            if isinstance(v, torch.Tensor):
                _require(v.dim() == 0, f"loss {k!r} is a tensor of shape {tuple(v.shape)}, not one number",
                         "return each loss as a 0-dim tensor (reduce it with .mean() or .sum()) or a float")
                _require(not v.requires_grad,
                         f"loss {k!r} is a Tensor, not a Python float or a detached 0-dim tensor: it requires grad",
                         "return loss.detach() (a 0-dim tensor, read only when it is logged) or return loss.item() "
                         "(a float); a tensor that requires grad keeps the step's autograd graph and its memory "
                         "alive")
                v = float(v)
            _require(isinstance(v, float | int) and not isinstance(v, bool),
                     f"loss {k!r} is a {type(v).__name__}, not a number",
                     "return each loss as a detached 0-dim tensor (loss.detach()) or a float")
            _require(math.isfinite(v), f"loss {k!r} = {v} at step {step}",
                     "lower the learning rate, clamp log-scales, or add an epsilon inside logs and divisions")

    def check_config(self) -> str:
        _require(dataclasses.is_dataclass(self.cls.Config), f"{self.cls.__name__}.Config is not a dataclass",
                 "declare Config as a @dataclass with the published hyper-parameters as defaults")
        missing = [f.name for f in dataclasses.fields(self.cls.Config)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        _require(not missing, f"fields without a default: {missing}",
                 "give every config field a default (the paper's value)")
        cfg = self.cls.make_config(self.config)
        overridden = f" (set: {', '.join(f'{k}={v!r}' for k, v in self.config.items())})" if self.config else ""
        return f"{type(cfg).__name__} with {len(dataclasses.fields(cfg))} fields{overridden}"

    def check_build(self) -> str:
        model = self.build()
        n_params = sum(p.numel() for p in model.parameters())
        _require(n_params > 0, "the model has no parameters",
                 "register the networks as attributes (nn.Module) so model.parameters() finds them")
        opts = model.optimizers
        _require(isinstance(opts, dict) and opts and all(isinstance(o, torch.optim.Optimizer) for o in opts.values()),
                 f"model.optimizers is {opts!r:.80}",
                 "build the optimisers in __init__ into self.optimizers = {'name': torch.optim.Adam(...)}: "
                 "checkpoints save and restore them from there")
        return f"{n_params:,} parameters, optimisers {sorted(opts)}"

    def check_train_step(self) -> str:
        model = self.build()
        before = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        losses = self.train(model, validate=True)
        after = model.state_dict()
        changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
        _require(bool(changed), f"no parameter changed in {self.steps} steps",
                 "call optimizer.zero_grad(), loss.backward() and optimizer.step() in train_step")
        self.trained = model
        last = ", ".join(f"{k}={float(v):.3g}" for k, v in list(losses[-1].items())[:3])
        return f"{self.steps} steps, last losses {last}"

    def check_sample(self) -> str:
        model = self.trained
        x = self.samples(model)
        _require_none(sample_violation(x, SAMPLE_N, self.spec))
        one = self.samples(model, n=1)
        _require(tuple(one.shape) == (1, *self.spec.shape), f"sample(1) has shape {tuple(one.shape)}",
                 "honour n for every n, including 1")
        again = self.samples(model)
        _require(torch.equal(x, again), "two calls with identically seeded generators gave different samples",
                 "draw all noise from the `generator` argument (genbench.nn.randn(shape, generator, device)), "
                 "not from the global RNG")
        return f"shape {tuple(x.shape)}, {x.dtype}, range [{float(x.min()):.3g}, {float(x.max()):.3g}]"

    def check_capabilities(self) -> str:
        model = self.trained
        caps = set(self.cls.capabilities)
        notes = []
        x = self.test_x()
        n = len(x)
        model.eval()
        with torch.no_grad():
            if Capability.LOG_LIKELIHOOD in caps:
                _require(_overridden(self.cls, "log_likelihood"), "declares log_likelihood but does not implement it",
                         "implement log_likelihood(x) or drop Capability.LOG_LIKELIHOOD")
                _require_none(log_likelihood_violation(model.log_likelihood(x), n))
                notes.append("log_likelihood (n,)")
            elif _overridden(self.cls, "log_likelihood"):
                notes.append("log_likelihood implemented but LOG_LIKELIHOOD not declared: metrics skip it")
            if Capability.LATENT in caps:
                for m in ("encode", "decode", "prior"):
                    _require(_overridden(self.cls, m), f"declares latent but does not implement {m}",
                             "implement encode(x), decode(z) and prior(), or drop Capability.LATENT")
                q = model.encode(x)
                _require(_is_dist(q), f"encode returned {type(q).__name__}",
                         "return a torch.distributions.Distribution for q(z|x), e.g. Independent(Normal(mu, sigma), 1)")
                _require(tuple(q.batch_shape) == (n,) and len(q.event_shape) == 1,
                         f"encode(x) has batch {tuple(q.batch_shape)} and event {tuple(q.event_shape)} for {n} points",
                         "batch shape (n,) and a 1-d event (latent_dim,): wrap Normal in Independent(..., 1)")
                _require(q.has_rsample, "q(z|x) has no rsample",
                         "use a reparameterisable distribution (Normal), so IWAE and the posterior gaps work")
                z = q.rsample()
                self._check_prior_decode(model, z, x, q.event_shape)
                _require(tuple(q.log_prob(z).shape) == (n,), f"q.log_prob(z) has shape {tuple(q.log_prob(z).shape)}",
                         "the event of q must hold the whole latent vector (Independent(..., 1))")
                notes.append(f"latent {tuple(q.event_shape)}")
            elif Capability.DECODER in caps:
                for m in ("decode", "prior"):
                    _require(_overridden(self.cls, m), f"declares decoder but does not implement {m}",
                             "implement decode(z) and prior(), or drop Capability.DECODER")
                p = model.prior()
                _require(_is_dist(p), f"prior returned {type(p).__name__}", "return a torch Distribution")
                z = p.sample((n,)).to(x.device)
                self._check_prior_decode(model, z, x, p.event_shape)
                notes.append(f"decoder, latent {tuple(p.event_shape)}")
            if Capability.TRANSLATE in caps:
                translate = getattr(model, "translate", None)
                _require(callable(translate), "declares translate but has no translate method",
                         "implement translate(x, source, target) or drop Capability.TRANSLATE")
                y = translate(x.clamp(0, 1), 0, 1)
                _require(isinstance(y, torch.Tensor) and y.shape == x.shape and _finite(y),
                         f"translate(x, 0, 1) returned shape {tuple(getattr(y, 'shape', ()))} "
                         f"for input {tuple(x.shape)}",
                         "return images of the input's shape, in [0, 1]")
                notes.append("translate")
            if Capability.CONDITIONAL in caps:
                params = inspect.signature(model.sample).parameters
                _require("condition" in params, "declares conditional but sample takes no condition",
                         "accept sample(n, generator=None, condition=None)")
                notes.append("conditional sample signature")
        model.train()
        return ", ".join(notes) or "sample only"

    def _check_prior_decode(self, model, z, x, event_shape) -> None:
        n = len(x)
        p = model.prior()
        _require(_is_dist(p), f"prior returned {type(p).__name__}", "return a torch Distribution for p(z)")
        _require(tuple(p.event_shape) == tuple(event_shape) and tuple(p.batch_shape) == (),
                 f"prior has batch {tuple(p.batch_shape)}, event {tuple(p.event_shape)}; the latent event is "
                 f"{tuple(event_shape)}", "prior(): batch shape () and event shape (latent_dim,)")
        lp = p.log_prob(z)
        _require(tuple(lp.shape) == (n,) and _finite(lp), f"prior.log_prob(z) has shape {tuple(lp.shape)}",
                 "prior event shape must be (latent_dim,)")
        px = model.decode(z)
        _require(_is_dist(px), f"decode returned {type(px).__name__}",
                 "return a torch Distribution for p(x|z) (e.g. Independent(Normal(mean, sigma), len(spec.shape)))")
        _require(tuple(px.batch_shape) == (n,) and tuple(px.event_shape) == tuple(self.spec.shape),
                 f"decode(z) has batch {tuple(px.batch_shape)} and event {tuple(px.event_shape)}; expected "
                 f"({n},) and {tuple(self.spec.shape)}",
                 "reshape the decoder output to (*z.shape[:-1], *spec.shape) and use Independent(..., len(spec.shape))")
        lx = px.log_prob(x)
        _require(tuple(lx.shape) == (n,) and _finite(lx), f"decode(z).log_prob(x) has shape {tuple(lx.shape)}, "
                 f"finite: {_finite(lx)}", "the observation model must give finite densities to dequantised data")

    def check_determinism(self) -> str:
        again = self.build(seed=0)
        self.train(again)
        out = [self.samples(self.trained), self.samples(again)]
        diff = float((out[0] - out[1]).abs().max())
        _require(torch.equal(out[0], out[1]), f"two builds with seed 0 and {self.steps} steps differ by {diff:.3g}",
                 "draw every random number from torch's seeded generators (no numpy/python RNG without a seed, "
                 "no time- or id-based randomness) and avoid non-deterministic kernels")
        return f"identical samples after {self.steps} steps"

    def check_checkpoint(self) -> str:
        model = self.trained
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(),
                    "optimizers": {k: o.state_dict() for k, o in model.optimizers.items()}}, buf)
        buf.seek(0)
        try:
            blob = torch.load(buf, map_location=self.device, weights_only=True)
        except Exception as exc:
            raise CheckFailed(f"the state does not load with weights_only=True: {_brief(exc)}",
                              "keep only tensors, numbers, strings, lists and dicts in state_dict() "
                              "(and in get_extra_state())") from None
        fresh = self.build(seed=1)
        fresh.load_state_dict(blob["model"])
        for k, o in fresh.optimizers.items():
            o.load_state_dict(blob["optimizers"][k])
        fix = ("keep every piece of state that sampling or training uses in the state_dict: parameters, "
               "register_buffer(...) for tensors, get_extra_state()/set_extra_state() for anything else")
        _require(torch.equal(self.samples(model), self.samples(fresh)),
                 "a fresh model loaded from the checkpoint samples differently", fix)
        batch = next(ResumableBatches(self.dataset, int(getattr(model.config, "batch_size", model.batch_size)), 7))
        for m in (model, fresh):
            torch.manual_seed(5)
            m.train_step(batch, 0.5)
        _require(torch.equal(self.samples(model), self.samples(fresh)),
                 "after one more step, the reloaded model differs: optimiser state did not round-trip",
                 "keep all optimisers in self.optimizers and any schedule state in the state_dict")
        return "same samples and the same next step after reload"

    def run(self) -> list[CheckResult]:
        if not self.record("config", self.check_config):
            for c in ORDER[1:]:
                self.skip(c, "config failed")
            return self.results
        if not self.record("build", self.check_build):
            for c in ORDER[2:]:
                self.skip(c, "build failed")
            return self.results
        trained = self.record("train_step", self.check_train_step)
        for name, fn in (("sample", self.check_sample), ("capabilities", self.check_capabilities),
                         ("determinism", self.check_determinism), ("checkpoint", self.check_checkpoint)):
            if trained:
                self.record(name, fn)
            else:
                self.skip(name, "train_step failed")
        return self.results


ORDER = ["config", "build", "train_step", "sample", "capabilities", "determinism", "checkpoint"]
FIXES = {
    "config": "make Config a dataclass whose fields all have defaults",
    "build": "the constructor must accept (config, spec) and build for any spec that applies_to accepts",
    "train_step": "train_step(batch, progress) takes one optimisation step and returns {'name': loss.detach()}",
    "sample": "sample(n, generator=None, condition=None) returns (n, *spec.shape) samples",
    "capabilities": "implement every method the declared capabilities promise, or drop the capability",
    "determinism": "draw every random number from torch's seeded generators",
    "checkpoint": "keep all state in state_dict() and self.optimizers",
}


def datasets_to_check(manager, model_cls, names: list[str] | None) -> list[str]:
    """The named datasets (each must apply), else one default-suite dataset per data kind."""
    from genbench.suite import runs_by_default

    if names:
        for d in names:
            ok, why = model_cls.applies_to(manager.datasets.get(d).spec)
            if not ok:
                raise GenbenchError(f"model {model_cls.name!r} does not apply to dataset {d!r}: {why}")
        return list(names)
    candidates = sorted(manager.datasets, key=lambda d: (d not in PREFERRED, d))
    chosen: dict[str, str] = {}
    for d in candidates:
        entry = manager.datasets.get(d)
        if entry.kind in chosen or not entry.in_default_suite:
            continue
        if runs_by_default(model_cls, entry.spec):
            chosen[entry.kind] = d
    if not chosen:
        for d in candidates:  # families that need a task set run on the first that applies
            entry = manager.datasets.get(d)
            if entry.in_default_suite and model_cls.applies_to(entry.spec)[0]:
                return [d]
        raise GenbenchError(f"no registered default dataset applies to {model_cls.name!r}; name one with --dataset")
    return list(chosen.values())


def check_models(manager, models: list[str], datasets: list[str] | None = None, steps: int = 4,
                 device: str = "cpu", config: dict | None = None) -> list[CheckResult]:
    """Every check of each of ``models``; ``config`` maps a model name to overrides of its config."""
    from genbench.runner import resolve_device

    dev = resolve_device(device)
    results: list[CheckResult] = []
    built: dict = {}
    for name in models:
        cls = manager.models.get(name)
        for d in datasets_to_check(manager, cls, datasets):
            try:
                if d not in built:
                    built[d] = manager.datasets.get(d).build().to(dev)
            except Exception as exc:
                results.append(CheckResult(name, d, "dataset", False, f"could not load {d}: {_brief(exc)}",
                                           "fix the dataset's files or pick another with --dataset"))
                continue
            results.extend(ModelChecker(cls, built[d], steps, dev, (config or {}).get(name)).run())
    return results


def print_results(console: Console, results: list[CheckResult]) -> None:
    table = Table(title="genbench check", header_style="bold")
    for head in ("model", "dataset", "check", "result", "detail"):
        table.add_column(head, overflow="fold")
    for r in results:
        table.add_row(r.model, r.dataset, r.check, "[green]ok[/green]" if r.ok else "[red]FAIL[/red]",
                      r.detail)
    console.print(table)
    failures = [r for r in results if not r.ok and not r.detail.startswith("not run:")]
    for r in failures:
        console.print(f"[red]✗ {r.model} on {r.dataset}: {r.check}[/red] — {r.detail}")
        console.print(f"  [bold]fix:[/bold] {r.fix}")
    models = sorted({r.model for r in results})
    bad = sorted({r.model for r in results if not r.ok})
    if bad:
        console.print(f"[red]{len(bad)} of {len(models)} model(s) fail the contract:[/red] {', '.join(bad)}")
    else:
        console.print(f"[green]{len(models)} model(s) honour the contract[/green] ({len(results)} checks)")


def cmd_check(args, manager, console: Console) -> int:
    if args.steps < 1:
        raise GenbenchError(f"--steps must be at least 1, got {args.steps}")
    if args.all and args.models:
        raise GenbenchError("give model names or --all, not both")
    models = list(manager.models) if args.all else list(args.models)
    if not models:
        raise GenbenchError("name a model to check (see `genbench list`), or use --all")
    for name in models:
        manager.models.get(name)
    from genbench.overrides import parse_sets

    config = parse_sets(args.sets, manager, models, add="name it: genbench check {model}")
    from genbench.imagesets import dataset_names

    results = check_models(manager, models, dataset_names(args.dataset, manager), args.steps, args.device, config)
    if args.json:  # stdout carries the JSON alone
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        print_results(console, results)
    return 0 if all(r.ok for r in results) else 1
