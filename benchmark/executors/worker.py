"""What runs in a worker process: a clean start for every trial, failure reasons that name the
cause, the parent-death watchdog, the log cap, memory and core limits, and the worker loop.
"""

from __future__ import annotations

import collections
import datetime as _dt
import faulthandler
import gc
import os
import random
import re
import signal
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from genbench.executors.jobs import (
    LOG_CAP_BYTES,
    LOG_CHECK_S,
    LOG_TAIL_BYTES,
    PROGRESS_INTERVAL_S,
    EventHandler,
    ExecutorOptions,
    TrialJob,
    _no_events,
    proc_stat,
)
from genbench.runner import perform_trial, resolve_device

# --- a clean start for every trial, and failure reasons that name the cause --------------------


def descendants(pid: int | None = None) -> list[int]:
    """The process ids below ``pid`` (default: this process), read from /proc; empty elsewhere."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = collections.defaultdict(list)
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        fields = proc_stat(name)
        try:
            ppid = int(fields[1])
        except (TypeError, ValueError, IndexError):
            continue
        children[ppid].append(int(name))
    out, todo = [], list(children.get(root, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def end_processes(pids: list[int], wait_s: float = 2.0) -> None:
    """SIGKILL ``pids`` and reap those that are (or become, through the subreaper) this process's children."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    left, deadline = set(pids), time.monotonic() + wait_s
    while left and time.monotonic() < deadline:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (its own parent reaps it) or already reaped
                done = pid
            if done:
                left.discard(pid)
        if left:
            time.sleep(0.02)


def reset_trial_state(seed: int, threads: int) -> None:
    """What one trial may change and the next must not inherit: torch's thread count, the global
    random number generators (torch, Python, NumPy), autograd mode and torch's default dtype."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)  # also every CUDA device's generator
    random.seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)


@contextmanager
def clean_trial(seed: int, threads: int) -> Iterator[None]:
    """Run one trial from a clean state (:func:`reset_trial_state`) and leave none of it behind:
    processes it started and left running are ended, and the environment variables, working
    directory and thread count it changed are restored."""
    env, cwd = dict(os.environ), os.getcwd()
    before = set(descendants())
    reset_trial_state(seed, threads)
    try:
        yield
    finally:
        left = [pid for pid in descendants() if pid not in before]
        if left:
            print(f"--- ending {len(left)} process(es) the trial left running: {left}", flush=True)
            end_processes(left)
        torch.set_num_threads(threads)
        if dict(os.environ) != env:
            os.environ.clear()
            os.environ.update(env)
        try:
            os.chdir(cwd)
        except OSError:
            pass


_FRAME = re.compile(r'^\s*File "(?P<path>.+)", line (?P<line>\d+), in (?P<func>.+)$')
_LIBRARY_DIRS = tuple(str(Path(d).resolve()) for d in (
    Path(torch.__file__).parent, Path(__file__).parent, sysconfig.get_paths()["stdlib"]))


def _is_library(path: str) -> bool:
    try:
        resolved = str(Path(path).resolve())
    except (OSError, RuntimeError):
        return False
    return resolved.startswith(_LIBRARY_DIRS)


def failing_frame(tb_text: str) -> tuple[str, str] | None:
    """("func (file.py:line)", source line) of the innermost frame of the final exception in a
    formatted traceback that is the model's own (not torch's, genbench's or the standard
    library's); None when there is none."""
    lines = (tb_text or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    lines = lines[starts[-1] + 1 :] if starts else lines
    for i in range(len(lines) - 1, -1, -1):
        m = _FRAME.match(lines[i])
        if m and not _is_library(m["path"]):
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            src = nxt.strip() if nxt.startswith("    ") and not _FRAME.match(nxt) else ""
            return f"{m['func']} ({Path(m['path']).name}:{m['line']})", src
    return None


def name_the_cause(record: dict) -> dict:
    """Make a failed record's reason name its cause.  A contract violation is its own one line
    (no class name, no traceback); another exception gets the innermost frame of the model's code,
    and an exception without a message (a bare ``assert``) the failing statement too."""
    from genbench.metrics import ContractViolation

    reason = record.get("reason")
    if record.get("status") != "failed" or record.get("fault") != "exception" or not isinstance(reason, str):
        return record
    prefix = f"{ContractViolation.__name__}: "
    if reason.startswith(prefix):
        record["reason"] = reason[len(prefix):]
        record.pop("traceback", None)
        return record
    frame = failing_frame(record.get("traceback", ""))
    if frame is None:
        return record
    where, src = frame
    kind, _, message = reason.partition(":")
    if not message.strip():  # e.g. "AssertionError: ": say which statement raised it
        record["reason"] = f"{kind} (no message) in {where}" + (f": {src}" if src else "")
    elif where not in reason:
        record["reason"] = f"{reason} (in {where})"[:2000]
    return record


def exit_record(job: TrialJob, manager, device, exc: SystemExit) -> dict:
    """The failed record of a trial whose model called ``sys.exit`` (which would end the worker)."""
    from genbench.runner import base_record

    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not _is_library(f.filename)] or frames
    where = f" in {own[-1].name} ({Path(own[-1].filename).name}:{own[-1].lineno})" if own else ""
    record = base_record(job.trial, manager.models.get(job.trial.model), manager, job.suite, device)
    record.update(fault="exception",
                  reason=f"SystemExit({exc.code!r}){where}: the model tried to end the process; "
                         "raise an exception instead",
                  traceback="".join(traceback.format_exception(exc, limit=-6)),
                  finished=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"))
    return record


# --- what runs in a worker ------------------------------------------------------------------


class WorkerRuntime:
    """A process's plugin manager and datasets, kept across the trials it runs."""

    def __init__(self, plugin_files: tuple[str, ...], device: str, manager=None, threads: int | None = None):
        from genbench.manager import PluginManager

        self.manager = manager if manager is not None else PluginManager(plugin_files=plugin_files)
        self.device = resolve_device(device)
        self.datasets: dict = {}
        self.threads = threads or torch.get_num_threads()  # every trial starts with these

    def dataset(self, name: str):
        if name not in self.datasets:
            self.datasets[name] = self.manager.datasets.get(name).build().to(self.device)
        return self.datasets[name]

    def run(self, job: TrialJob, out_dir: Path, emit: EventHandler = _no_events) -> dict:
        last = [0.0]

        def on_train(frac, losses):
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or frac >= 1.0:
                last[0] = now
                emit(job, "progress", (frac, {k: float(v) for k, v in list(losses.items())[:3]}))

        with clean_trial(job.trial.seed, job.threads or self.threads):
            try:
                record = perform_trial(
                    job.trial, self.manager, self.dataset, self.device, out_dir, job.suite,
                    checkpoint_dir=job.suite_dir, checkpoint_every=job.checkpoint_every,
                    on_phase=lambda phase: emit(job, "phase", phase), on_train=on_train,
                    on_metric=lambda name: emit(job, "metric", name), keep_weights=job.keep_weights)
            except SystemExit as exc:  # sys.exit in a model ends its trial, not the process
                record = exit_record(job, self.manager, self.device, exc)
        name_the_cause(record)
        record["command"] = job.command
        return record


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the runner ends, even by SIGKILL: a stray worker would go on
    training (and writing its checkpoint) beside the runner that resumes the suite."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass

    def watch():
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(1.0)

    if os.getppid() != parent_pid:  # the runner died before the signal was armed
        os._exit(1)
    threading.Thread(target=watch, name="genbench-parent-watch", daemon=True).start()


def _own_descendants() -> None:
    """Make this worker its own process group (so the runner can end it with everything it started,
    :meth:`_Worker.kill`) and, on Linux, a subreaper (orphaned grandchildren become its children, so
    :func:`clean_trial` finds and ends them)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_child_subreaper = 36
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1)
        except (OSError, AttributeError):
            pass


def _log_exits() -> None:
    """Write a line naming the caller before ``os._exit`` ends this worker: the runner reads it back
    as the cause of the worker's death (an exit code alone says nothing)."""
    real_exit = os._exit

    def _exit(code):
        try:
            f = sys._getframe(1)
            print(f"--- os._exit({code}) called in {f.f_code.co_name} ({Path(f.f_code.co_filename).name}:{f.f_lineno})",
                  flush=True)
        except Exception:
            pass
        real_exit(code)

    os._exit = _exit


class _LogCap(threading.Thread):
    """Keeps a worker's log (the file behind its stdout and stderr) under ``cap`` bytes: past it,
    the last ``tail`` bytes go to ``<log>.1`` and the log is truncated (writes append, so they go on
    at its new end), with a line saying so."""

    def __init__(self, fd: int, path: Path, cap: int, tail: int):
        super().__init__(name="genbench-log-cap", daemon=True)
        self.fd, self.path, self.cap, self.tail = fd, path, cap, tail

    def run(self) -> None:
        while True:
            time.sleep(LOG_CHECK_S)
            try:
                size = os.fstat(self.fd).st_size
                if size > self.cap:
                    self.rotate(size)
            except OSError:
                pass

    def rotate(self, size: int) -> None:
        kept = self.path.with_name(self.path.name + ".1")
        with open(self.path, "rb") as fh:
            fh.seek(max(0, size - self.tail))
            data = fh.read(self.tail)
        tmp = kept.with_name(kept.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, kept)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, (f"--- log rotated at {size} bytes (cap {self.cap}); its last {len(data)} bytes "
                           f"are in {kept.name}\n").encode())


def _vm_size() -> int:
    """This process's address space in bytes (0 where /proc is not there)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def worker_cores(slot: int, options: ExecutorOptions, threads: int | None) -> tuple[int, ...] | None:
    """The CPU cores worker ``slot`` is pinned to, or None (no pinning).

    On a CPU, when the workers' threads fit in the cores this process may use, each worker gets
    cores of its own.  Left to the scheduler, a machine busy with other work moves trials from core
    to core, and each move costs a trial a cold cache that its CPU time (the seconds budget) pays
    for: beside two CPU-heavy processes, an unpinned MLP trial bought 0.76-0.85x the steps of a
    quiet run in the same CPU time, while one sharing a fixed core with the same load bought 0.95x."""
    if not hasattr(os, "sched_getaffinity") or resolve_device(options.device).type == "cuda":
        return None
    allowed = sorted(os.sched_getaffinity(0))
    per = threads or 1
    if options.workers * per > len(allowed):
        return None
    return tuple(allowed[slot * per:(slot + 1) * per])


# sched_setattr(2) by number: neither the os module nor a kept library wraps it
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
TIME_SLICE_MS = 30


def long_time_slices(ms: int = TIME_SLICE_MS) -> str:
    """Ask the scheduler for time slices of ``ms`` milliseconds for this worker (Linux 6.12 and newer;
    unprivileged; inherited by threads created afterwards).

    The share of the CPU stays the fair one; only the length of an uninterrupted run changes.  On a
    busy machine a trial is otherwise switched out every ~1.4 ms, and each switch costs it a refill
    of caches and branch predictors that its CPU time (the seconds budget) pays for: beside two
    CPU-heavy processes, trials got 0.75-0.92x the steps of a quiet run in the same CPU time."""
    import ctypes
    import platform
    import struct

    number = _SCHED_SETATTR.get(platform.machine())
    if sys.platform != "linux" or number is None:
        return "time slices: the system's (no sched_setattr here)"
    libc = ctypes.CDLL(None, use_errno=True)
    # struct sched_attr (SCHED_ATTR_SIZE_VER1): size, policy SCHED_OTHER, flags, nice, priority,
    # runtime (for SCHED_OTHER: the requested slice in ns), deadline, period, util_min, util_max
    attr = struct.pack("IIQiIQQQII", 56, 0, 0, os.getpriority(os.PRIO_PROCESS, 0), 0, ms * 1_000_000, 0, 0, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    if libc.syscall(number, 0, buf, 0) != 0:
        return f"time slices: the system's (sched_setattr: {os.strerror(ctypes.get_errno())})"
    return f"time slices: {ms} ms"


def cap_memory(extra_gb: float, device: torch.device) -> str:
    """Limit this process's address space to what it uses now plus ``extra_gb``.  Not applied on
    CUDA, whose driver reserves far more address space than it uses."""
    if extra_gb <= 0:
        return "no memory cap (--memory-limit 0)"
    if device.type == "cuda":
        return "no address-space cap on CUDA devices"
    try:
        import resource
    except ImportError:
        return "no memory cap on this platform"
    cap = _vm_size() + int(extra_gb * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    return f"address space capped at {cap / 2**30:.1f} GiB"


def worker_main(conn, plugin_files: tuple[str, ...], device: str, memory_limit_gb: float, log_path: str,
                parent_pid: int, threads: int | None,
                log_cap: tuple[int, int] = (LOG_CAP_BYTES, LOG_TAIL_BYTES),
                cores: tuple[int, ...] | None = None) -> None:
    """A worker process: load the plugins once, then run the trials the runner sends, each from a
    clean state (:func:`clean_trial`), on ``cores`` when given (:func:`worker_cores`)."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner decides what Ctrl-C stops
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    faulthandler.enable(file=log)  # a crash leaves the Python stack of the crashing trial in the log
    _own_descendants()
    _log_exits()
    if log_cap[0] > 0:
        _LogCap(log.fileno(), Path(log_path), *log_cap).start()
    placed = "cores: any"
    if cores:
        try:
            os.sched_setaffinity(0, cores)
            placed = f"cores: {','.join(map(str, cores))}"
        except OSError as exc:
            placed = f"cores: any ({exc.strerror})"
    print(f"--- genbench worker {os.getpid()} started; {placed}; {long_time_slices()}", flush=True)
    if threads:
        torch.set_num_threads(threads)

    def emit(job, kind, value):
        conn.send((kind, value))

    try:
        runtime = WorkerRuntime(tuple(plugin_files), device, threads=threads)
        print(f"--- {cap_memory(memory_limit_gb, runtime.device)}", flush=True)
    except BaseException as exc:  # the runner reports it; nothing here can recover
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        print(f"--- trial {job.trial_id}", flush=True)
        record = runtime.run(job, job.suite_dir, emit)
        # after running out of memory the heap may be fragmented or held by leaked references:
        # the next trial gets a fresh process
        retire = record.get("fault") == "oom"
        conn.send(("done", (record, retire)))
        if retire:
            return
        if record["status"] != "ok":
            del record
            gc.collect()  # a traceback holds frames in cycles; a full collection costs ~0.3 s, so only then


