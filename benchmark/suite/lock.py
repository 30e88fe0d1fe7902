"""One `genbench run` per suite folder at a time: the folder's lock, a read-only folder's shared
lock, and what an interrupted run left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from genbench.errors import GenbenchError
from genbench.results import (
    write_error,
)


class _ReadOnlyLock:
    """The lock of a suite folder that cannot be written: held in shared mode on the lock file if
    there is one (a run writing the folder holds it exclusively), nothing otherwise."""

    def __init__(self, reason: str, fh=None):
        self.read_only, self.fh = reason, fh

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def unwritable(*folders: Path) -> str | None:
    """Why one of ``folders`` cannot take new files (None: all can)."""
    import errno

    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            read_only_fs = getattr(os, "statvfs", None) and os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1)
            code = errno.EROFS if read_only_fs else errno.EACCES
            return write_error(OSError(code, os.strerror(code)), folder / "-")
    return None


def read_only_lock(out_dir: Path, reason: str) -> _ReadOnlyLock:
    try:
        fh = open(out_dir / ".genbench.lock")
    except OSError:
        return _ReadOnlyLock(reason)
    try:
        import fcntl

        fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except ImportError:
        pass
    except OSError:
        holder = fh.read().strip() or "another process"
        fh.close()
        raise GenbenchError(f"suite folder {out_dir} is in use by another genbench run ({holder}); wait for it to "
                            "finish or choose another --suite or --runs-dir") from None
    return _ReadOnlyLock(reason, fh)


def lock_suite(out_dir: Path):
    """Hold an exclusive lock on the suite folder for this run: two runners writing the same suite
    would run trials twice and race on checkpoints.  The system drops the lock when the process
    ends, however it ends."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fh = open(out_dir / ".genbench.lock", "a+")
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unguarded
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise GenbenchError(f"suite folder {out_dir} is in use by another genbench run ({holder}); wait for it to "
                            "finish or choose another --suite or --runs-dir") from None
    fh.truncate(0)
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


def clean_leftovers(out_dir: Path) -> None:
    """Delete temp files that a killed run left half-written (their writer's process is gone)."""
    for folder in ("trials", "checkpoints", "samples", "."):
        for tmp in (out_dir / folder).glob(".*.tmp*"):
            pid = tmp.name.rsplit(".tmp", 1)[-1]
            if pid.isdigit() and _alive(int(pid)):
                continue
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass  # a leftover that cannot be removed is only space: it is never read


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


