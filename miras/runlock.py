"""One trainer per run folder: an exclusive lock on ``<run>/train.lock`` for the whole of a training.

The lock is an OS file lock (``flock``; local filesystems, NFS and Lustre mounted with ``flock``) on a file that
names its holder: host, pid, SLURM job id, start time and a lease the holder renews every :data:`RENEW_S` seconds
from a heartbeat thread. Where the filesystem refuses file locks, the lease alone decides. A second trainer
refuses in one line naming the holder. A lock is taken over, with a one-line warning, when its holder is gone:

* its process no longer exists (or no longer holds the file lock) on this host,
* it belongs to this same SLURM job, requeued (after the old tasks have let go of the file lock),
* its lease was not renewed for :data:`STALE_S` seconds (a holder on another host that died with its node).

Only the launching process of a run takes the lock (rank 0; see :func:`launcher_rank`), not the other DDP ranks.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = "train.lock"
RENEW_S = 30.0
"""Seconds between two renewals of a holder's lease."""
STALE_S = 180.0
"""Seconds without a renewal after which a lease is stale and its lock may be taken over."""
_RANK_VARIABLES = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK")


class RunLocked(RuntimeError):
    """The run folder is held by another live trainer; the message names it and how to proceed."""


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def launcher_rank() -> int:
    """This process's rank among the processes of one training, from the variables that launchers set (srun,
    torchrun, Lightning's subprocess launcher); 0 for a plain ``python -m miras train``."""
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "0")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


def identity() -> dict:
    """Who would hold the lock: this host, process and SLURM job."""
    now = time.time()
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "started": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
        "renewed": now,
    }


def describe(holder: dict | None) -> str:
    """``pid 12 on host n1 (SLURM job 7) since 2025-01-01T00:00:00+00:00`` for a lock file's content."""
    if not holder:
        return "another process (it has not written its name yet)"
    job = f" (SLURM job {holder['slurm_job_id']})" if holder.get("slurm_job_id") else ""
    return f"pid {holder.get('pid')} on host {holder.get('host')}{job} since {holder.get('started')}"


def pid_alive(pid: object) -> bool:
    """Whether process ``pid`` of this host exists and is not a zombie."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def lease_age(holder: dict, now: float) -> float:
    """Seconds since the holder last renewed its lease (infinite for a lock file without a readable time)."""
    try:
        return now - float(holder["renewed"])
    except (KeyError, TypeError, ValueError):
        return float("inf")


def takeover(holder: dict | None, me: dict, *, locked: bool, now: float, stale_after: float) -> tuple[bool, str]:
    """Whether the lock file naming ``holder`` may be taken over by ``me``, and why (empty: nothing to take over).

    ``locked``: this process holds the OS file lock, so no process of this host holds it."""
    if not holder:
        return True, ""
    if holder.get("slurm_job_id") and holder.get("slurm_job_id") == me.get("slurm_job_id"):
        return True, f"SLURM job {holder['slurm_job_id']} was requeued"
    if holder.get("host") == me["host"]:
        if not pid_alive(holder.get("pid")):
            return True, "its process is gone"
        if locked:  # the pid is another process now: no process of this host holds the file lock
            return True, "its process no longer holds the file lock"
    age = lease_age(holder, now)
    if age > stale_after:
        return True, f"its lease was not renewed for {age:.0f} s (stale after {stale_after:.0f} s)"
    return False, ""


class RunLock:
    """The lock of run folder ``run``, held from :meth:`acquire` to :meth:`release` (or as a context manager).

    Args:
        run: the run folder (created if missing).
        stale_after: seconds without a lease renewal after which the lock may be taken over.
        renew_every: seconds between renewals.
        warn: where the one-line takeover warnings go.
    """

    def __init__(
        self,
        run: str | Path,
        *,
        stale_after: float = STALE_S,
        renew_every: float = RENEW_S,
        warn: Callable[[str], None] = _warn,
    ) -> None:
        self.run = Path(run)
        self.path = self.run / LOCK_NAME
        self.stale_after, self.renew_every, self.warn = stale_after, renew_every, warn
        self._fd: int | None = None
        self._me: dict = {}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLocked` naming its holder."""
        self.run.mkdir(parents=True, exist_ok=True)
        me = identity()
        fd, state = self._attempt()
        holder = _read(fd)
        if state == "busy" and holder and holder.get("slurm_job_id") and holder["slurm_job_id"] == me["slurm_job_id"]:
            # the requeued job's old tasks are being stopped by SLURM: wait until they let go
            deadline = time.monotonic() + self.stale_after
            while state == "busy" and time.monotonic() < deadline:
                os.close(fd)
                time.sleep(0.25)
                fd, state = self._attempt()
        if state == "busy":
            os.close(fd)
            raise RunLocked(
                f"{self.run} is being trained by {describe(holder)} (lock {self.path}); wait for it to finish or stop "
                "that process, then run again with --resume"
            )
        holder = _read(fd)
        take, reason = takeover(holder, me, locked=state == "locked", now=time.time(), stale_after=self.stale_after)
        if not take:
            os.close(fd)
            age = lease_age(holder, time.time())
            raise RunLocked(
                f"{self.run} is being trained by {describe(holder)} (lock {self.path}, renewed {age:.0f} s ago); wait "
                f"for it to finish or stop it; a lock not renewed for {self.stale_after:.0f} s is taken over, or "
                f"delete {self.path} once that process is gone"
            )
        if reason:
            self.warn(f"{self.path}: took over the lock of {describe(holder)}: {reason}")
        self._fd, self._me = fd, me
        try:
            self._write()
            if state == "unsupported":
                # no file lock to arbitrate two simultaneous takers: the one whose name stays in the file wins
                time.sleep(0.5)
                named = _read(fd)
                if (named.get("host"), named.get("pid")) != (me["host"], me["pid"]):
                    raise RunLocked(f"{self.run} was taken by {describe(named)} at the same time (lock {self.path})")
        except BaseException:
            self._fd = None
            os.close(fd)
            raise
        self._stop.clear()
        self._beat = threading.Thread(target=self._renew, name="miras-run-lock", daemon=True)
        self._beat.start()
        return self

    def release(self) -> None:
        """Stop renewing, delete the lock file and let go of the file lock."""
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        fd, self._fd = self._fd, None
        try:
            if _same_file(fd, self.path):
                self.path.unlink()
        finally:
            os.close(fd)  # closing the descriptor releases the file lock

    def _attempt(self) -> tuple[int, str]:
        """Open the lock file and try its file lock: ``locked``, ``busy`` or ``unsupported`` (no file locks here)."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                state = "locked"
            except BlockingIOError:
                state = "busy"
            except OSError as err:
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                state = "unsupported"
            # a holder deletes the file when it lets go: a lock on a deleted file guards nothing, so open again
            if state == "busy" or _same_file(fd, self.path):
                return fd, state
            os.close(fd)

    def _write(self) -> None:
        data = (json.dumps({**self._me, "renewed": time.time()}) + "\n").encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))
        os.fsync(self._fd)

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_every):
            try:
                self._write()
            except OSError:  # a network filesystem's hiccup: the next beat retries
                continue


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _read(fd: int) -> dict:
    """The holder named in the lock file, read through the held descriptor (no second open of the file)."""
    try:
        data = json.loads(os.pread(fd, 1 << 16, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
