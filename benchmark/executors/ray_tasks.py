"""The Ray executor: each trial a Ray task, on a local cluster or one already running.
"""

from __future__ import annotations

import collections
import hashlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from genbench.errors import GenbenchError
from genbench.executors.jobs import (
    EventHandler,
    ExecutorOptions,
    Fault,
    Result,
    TrialJob,
    _no_events,
)
from genbench.executors.worker import (
    WorkerRuntime,
    long_time_slices,
)

# --- Ray ------------------------------------------------------------------------------------

_RAY_RUNTIMES: dict = {}


def _materialise_plugins(plugins: list[tuple[str, str]]) -> tuple[str, ...]:
    """Plugin file paths usable on this node: the runner's own path where the file is there (same
    machine or shared filesystem), else a copy of the shipped source."""
    paths = []
    for path, source in plugins:
        if Path(path).is_file():
            paths.append(path)
            continue
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / "genbench-ray-plugins" / digest
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / Path(path).name
        if not copy.exists():
            copy.write_text(source)
        paths.append(str(copy))
    return tuple(paths)


def ray_trial(job: TrialJob, plugins: list[tuple[str, str]]) -> dict:
    """One trial as a Ray task: returns the record and the files it made (the sample grid), which
    the runner writes (the task may run on a node without the runs folder)."""
    paths = _materialise_plugins(plugins)
    key = (paths, job.device)
    if key not in _RAY_RUNTIMES:  # each trial starts with --threads, else the Ray worker's own thread count
        long_time_slices()
        _RAY_RUNTIMES[key] = WorkerRuntime(paths, job.device)
    runtime = _RAY_RUNTIMES[key]
    with tempfile.TemporaryDirectory(prefix="genbench-ray-") as tmp:
        record = runtime.run(job, Path(tmp))
        files = {}
        for kept in (record.get("samples"), (record.get("weights") or {}).get("path")):
            if kept:
                files[kept] = (Path(tmp) / kept).read_bytes()
    return {"record": record, "files": files}


@dataclass
class _InFlight:
    job: TrialJob
    ref: object
    deadline: float
    started: float = field(default_factory=time.monotonic)


class RayExecutor:
    """Each trial a Ray task, on a local Ray instance or an existing cluster (``--address``)."""

    def __init__(self, options: ExecutorOptions):
        try:
            import ray
        except ImportError:
            raise GenbenchError('--executor ray needs Ray: pip install -e ".[ray]" '
                                '(or pip install "ray[default]>=2.9")') from None
        self.ray = ray
        self.started_here = False
        if not ray.is_initialized():
            # a Ray instance started here serves this run only: no dashboard to start and expose
            extra = {} if options.address else {"include_dashboard": False}
            try:
                ray.init(address=options.address, log_to_driver=False, **extra)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"the Ray cluster at {options.address!r}" if options.address else "a local Ray instance"
                raise GenbenchError(f"could not connect to {where}: {exc}. Start the head with `ray start --head` "
                                    "and pass --address <head-ip>:6379.") from None
            self.started_here = True
        resources = ray.cluster_resources()
        use_gpu = resources.get("GPU", 0) >= 1 and options.device != "cpu"
        self.task_resources = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
        self.slots = max(1, int(resources.get("GPU" if use_gpu else "CPU", 1)))
        self.remote = ray.remote(max_retries=0)(ray_trial).options(**self.task_resources)
        self.plugins = [(str(Path(p).resolve()), Path(p).read_text()) for p in options.plugin_files]

    def _outcome(self, flight: _InFlight) -> dict | Fault:
        ray = self.ray
        try:
            out = ray.get(flight.ref)
        except ray.exceptions.OutOfMemoryError as exc:
            return Fault("oom", f"out of memory: Ray's memory monitor stopped the task ({str(exc).splitlines()[0]})")
        except ray.exceptions.WorkerCrashedError:
            return Fault("crashed", "crashed: the Ray worker process died (segfault, abort or kill)")
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Fault("crashed", f"crashed: {type(exc).__name__}: {first}"[:500])
        from genbench.results import atomic_write_bytes

        for rel, data in out["files"].items():
            atomic_write_bytes(flight.job.suite_dir / rel, data)
        return out["record"]

    def run(self, jobs: list[TrialJob], on_event: EventHandler = _no_events) -> Iterator[Result]:
        ray = self.ray
        pending = collections.deque(jobs)
        inflight: dict = {}
        try:
            while pending or inflight:
                while pending and len(inflight) < self.slots:
                    job = pending.popleft()
                    on_event(job, "start", None)
                    ref = self.remote.remote(job, self.plugins)
                    inflight[ref] = _InFlight(job, ref, time.monotonic() + job.limits.total())
                timeout = max(0.0, min(min(f.deadline for f in inflight.values()) - time.monotonic(), 1.0))
                done, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
                for ref in done:
                    flight = inflight.pop(ref)
                    yield flight.job, self._outcome(flight)
                now = time.monotonic()
                for ref, flight in list(inflight.items()):
                    if now > flight.deadline:
                        ray.cancel(ref, force=True)
                        del inflight[ref]
                        limit = flight.deadline - flight.started
                        yield flight.job, Fault("timeout", f"timed out after {limit:g} s (whole task: start-up, "
                                                           "setup, training and evaluation limits together)")
        finally:
            for ref in inflight:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


