"""Compute budgets: compute seconds (CPU time or CUDA device time), optimisation steps, or FLOPs.

One flag, one string: ``30s``, ``10m``, ``1h``, ``2000steps``, ``1e12flop``.  Whatever the limit,
a :class:`BudgetMeter` records all three quantities actually used, so trials stay comparable.

A second of budget is a second of the trial's own compute, not of the wall clock, so that a machine
busy with other work does not silently shrink a trial:

* on a CPU, the CPU time of the trial's process while it is inside a training step
  (``time.process_time``: the time of all its threads, torch's intra-op threads included; each
  trial runs in its own worker process, so no other trial's work is counted);
* on CUDA, device time between two CUDA events around the step.

Wall time inside the steps is recorded beside it (``wall_seconds``).  Only the training steps are
on the clock: the runner's checkpoints, model selection and evaluation run between or after them.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode``: matrix products and
convolutions, forward and backward (the usual convention; element-wise ops are not counted).
Under a FLOP budget every step is counted.  Under a time or step budget counting every step would
slow training (the counter intercepts every op), so the first step and every
``flop_sample_every``-th step are counted and the others are assigned the most recent count;
``flops_exact`` in the record says which was done.

Counting is measurement, not training, so it is kept off the budget's clock.  A counted step runs
slower than the same step uncounted (every op goes through the counter's Python dispatch), and
charging its measured time would spend part of every time budget on the counter.  Under a time or
step budget a counted step is therefore charged a stand-in: the mean clock time (and wall time) of
the uncounted steps since the previous counted step, the recent steps of the same model at the
same point of its training.  The first step of a run has no such steps before it; its charge waits
for the next uncounted step and is that step's time (``progress`` reads 0 until then), and if the
run ends first (a one-step budget) it is charged its own measured time.  Under a FLOP budget every
step is counted and none could stand in, so each is charged its measured time, the counter
included: there the FLOPs are the limit and the seconds are recorded beside them.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

try:  # the dispatch mode behind FlopCounterMode (torch >= 2.4)
    from torch.utils.flop_counter import _FlopCounterMode
except ImportError:  # older torch: FlopCounterMode is the dispatch mode itself
    _FlopCounterMode = None

from genbench.errors import BudgetError

_UNITS = {"s": ("seconds", 1.0), "m": ("seconds", 60.0), "h": ("seconds", 3600.0),
          "steps": ("steps", 1.0), "step": ("steps", 1.0), "flop": ("flops", 1.0), "flops": ("flops", 1.0)}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(s|m|h|steps?|flops?)\s*$")
ACCEPTED = ("30s, 10m, 1h (compute time: CPU time on a CPU, device time on CUDA), 2000steps (optimisation steps), "
            "1e12flop (floating-point operations)")


@dataclass(frozen=True)
class Budget:
    kind: str  # "seconds" | "steps" | "flops"
    amount: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Budget:
        m = _PATTERN.match(str(text))
        if not m:
            raise BudgetError(f"cannot read budget {text!r}; accepted forms: {ACCEPTED}")
        value, unit = float(m.group(1)), m.group(2)
        kind, scale = _UNITS[unit]
        amount = value * scale
        if not math.isfinite(amount):
            raise BudgetError(f"budget {text!r} is too large to be a number (it reads as infinite); "
                              f"accepted forms: {ACCEPTED}")
        if amount <= 0:
            raise BudgetError(f"budget {text!r} must be positive; accepted forms: {ACCEPTED}")
        if kind == "steps" and amount != int(amount):
            raise BudgetError(f"budget {text!r}: steps must be a whole number; accepted forms: {ACCEPTED}")
        return cls(kind, amount, str(text).strip())

    def __str__(self) -> str:
        return self.text


@dataclass
class BudgetUsage:
    seconds: float = 0.0  # the budget's clock: CPU time on a CPU, device time on CUDA (see the module doc)
    wall_seconds: float = 0.0  # wall time inside the same steps, for the record
    steps: int = 0
    flops: float = 0.0
    flops_exact: bool = True
    overrun: float = 0.0  # fraction past the limit in the budget's own unit (time budgets)
    clock: str = ""  # what ``seconds`` counts: "cpu process time" or "cuda events"

    def as_dict(self) -> dict:
        return asdict(self)


_COUNTER_READY = False


def warm_up_flop_counter() -> None:
    """The first FlopCounterMode of a process costs about a second of one-off set-up; pay it before
    the clock starts so a time budget buys training, not set-up."""
    global _COUNTER_READY
    if not _COUNTER_READY:
        a = torch.ones(2, 2)
        with TotalFlopCounter(display=False):
            a @ a
        _COUNTER_READY = True


class BudgetMeter:
    """Accounts one training run against a budget.

    Use as::

        meter = BudgetMeter(budget, device)
        while not meter.exhausted():
            with meter.step():
                model.train_step(batch, meter.progress())
    """

    def __init__(self, budget: Budget, device: torch.device | str = "cpu", flop_sample_every: int = 100):
        self.budget = budget
        self.device = torch.device(device)
        self.usage = BudgetUsage(flops_exact=budget.kind == "flops", clock=clock_name(self.device))
        self.flop_sample_every = 1 if budget.kind == "flops" else flop_sample_every
        self._last_step_flops = 0.0
        # a counted step is charged the mean time of recent uncounted steps (see the module doc),
        # unless every step is counted
        self._stand_in = self.flop_sample_every > 1
        self._recent = (0.0, 0.0, 0)  # clock seconds, wall seconds, number: uncounted steps since the last counted one
        self._owed: list[tuple[float, float]] = []  # measured times of counted steps not charged yet
        warm_up_flop_counter()

    def progress(self) -> float:
        u, b = self.usage, self.budget
        used = {"seconds": u.seconds, "steps": u.steps, "flops": u.flops}[b.kind]
        return min(1.0, used / b.amount)

    def exhausted(self) -> bool:
        return self.progress() >= 1.0

    def step(self) -> _StepContext:
        return _StepContext(self)

    def charge(self, seconds: float, wall: float, counted: bool) -> None:
        """Account one finished step that took ``seconds`` on the budget's clock (``wall`` on the
        wall clock); ``counted`` when the FLOP counter was on during it."""
        u = self.usage
        u.steps += 1
        u.flops += self._last_step_flops
        if counted and self._stand_in:
            clock, walls, n = self._recent
            if n:
                u.seconds += clock / n
                u.wall_seconds += walls / n
            else:  # nothing to stand in yet: charged with the next uncounted step
                self._owed.append((seconds, wall))
            self._recent = (0.0, 0.0, 0)
            return
        u.seconds += seconds
        u.wall_seconds += wall
        if not counted:
            clock, walls, n = self._recent
            self._recent = (clock + seconds, walls + wall, n + 1)
            u.seconds += len(self._owed) * seconds
            u.wall_seconds += len(self._owed) * wall
            self._owed.clear()

    def finish(self) -> BudgetUsage:
        for seconds, wall in self._owed:  # no uncounted step came after them: their own time
            self.usage.seconds += seconds
            self.usage.wall_seconds += wall
        self._owed.clear()
        if self.budget.kind == "seconds":
            self.usage.overrun = max(0.0, self.usage.seconds / self.budget.amount - 1.0)
        return self.usage


class TotalFlopCounter(FlopCounterMode):
    """FlopCounterMode without its per-module tracker.  Only the total is needed, and the tracker's
    backward hooks make steps that call ``torch.autograd.grad`` on a leaf tensor fail (every
    gradient penalty: WGAN-GP, StarGAN, progressive GAN)."""

    def __enter__(self):
        if _FlopCounterMode is None:
            return super().__enter__()
        self.flop_counts.clear()
        self.mode = _FlopCounterMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        if _FlopCounterMode is None:
            return super().__exit__(*args)
        out = self.mode.__exit__(*args)
        self.mode = None
        return out


def clock_name(device: torch.device) -> str:
    return "cuda events" if device.type == "cuda" else "cpu process time"


class _StepClock:
    """The budget's clock around one step: CPU time of this process on a CPU, device time by CUDA
    events on a GPU; wall time beside it.  ``stop()`` returns (budget seconds, wall seconds)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
            self.begin.record()
        else:
            self.cpu0 = time.process_time()
        self.wall0 = time.perf_counter()

    def stop(self) -> tuple[float, float]:
        if self.cuda:
            self.end.record()
            self.end.synchronize()
            spent = self.begin.elapsed_time(self.end) / 1000.0  # milliseconds -> seconds
        else:
            spent = time.process_time() - self.cpu0
        return spent, time.perf_counter() - self.wall0


class _StepContext:
    def __init__(self, meter: BudgetMeter):
        self.meter = meter
        self.counter = None
        self.clock = _StepClock(meter.device)

    def __enter__(self):
        m = self.meter
        if m.usage.steps % m.flop_sample_every == 0:
            self.counter = TotalFlopCounter(display=False)
            self.counter.__enter__()
        self.clock.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        m = self.meter
        elapsed, wall = self.clock.stop()
        if self.counter is not None:
            self.counter.__exit__(exc_type, exc, tb)
            m._last_step_flops = float(self.counter.get_total_flops())
        if exc_type is None:
            m.charge(elapsed, wall, counted=self.counter is not None)
        return False
