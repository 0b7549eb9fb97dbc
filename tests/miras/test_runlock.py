"""One trainer per run folder: a second one refuses in one line, a dead holder's lock is taken over with one
warning, a requeued SLURM job takes its own lock back, and only the launching rank locks."""

import json
import socket
import subprocess
import threading
import time

import pytest

from miras.runlock import LOCK_NAME, RunLock, RunLocked, launcher_rank, takeover


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def holder(**fields) -> dict:
    return {"host": socket.gethostname(), "pid": dead_pid(), "slurm_job_id": None, "started": "t0", **fields}


def plant(run, content: dict):
    """A lock file left by a holder that no longer holds the OS lock (killed, or on another host)."""
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(json.dumps(content))


def test_a_second_trainer_refuses_in_one_line_naming_the_holder(tmp_path):
    with RunLock(tmp_path / "run") as first:
        content = json.loads(first.path.read_text())
        with pytest.raises(RunLocked) as err:
            RunLock(tmp_path / "run").acquire()
        message = str(err.value)
        assert f"pid {content['pid']} on host {socket.gethostname()}" in message and "\n" not in message
        assert "wait for it to finish or stop that process" in message
        assert json.loads(first.path.read_text())["pid"] == content["pid"]  # the holder's file is untouched
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    warnings = []
    with RunLock(tmp_path / "run", warn=warnings.append):
        assert warnings == []


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path):
    dead = holder(renewed=time.time())  # killed -9 a moment ago: its lease is fresh, its process gone
    plant(tmp_path / "run", dead)
    warnings = []
    with RunLock(tmp_path / "run", warn=warnings.append) as lock:
        assert json.loads(lock.path.read_text())["pid"] != dead["pid"]
    assert len(warnings) == 1 and f"took over the lock of pid {dead['pid']}" in warnings[0]
    assert "its process is gone" in warnings[0] and "\n" not in warnings[0]


def test_a_holder_on_another_host_keeps_the_lock_while_it_renews_its_lease(tmp_path):
    plant(tmp_path / "run", holder(host="elsewhere", pid=1, renewed=time.time() - 10))
    with pytest.raises(RunLocked, match="renewed 10 s ago.*not renewed for 180 s is taken over"):
        RunLock(tmp_path / "run").acquire()
    plant(tmp_path / "run", holder(host="elsewhere", pid=1, renewed=time.time() - 200))
    warnings = []
    with RunLock(tmp_path / "run", warn=warnings.append):
        assert "its lease was not renewed for 200 s (stale after 180 s)" in warnings[0]


def test_a_requeued_slurm_job_takes_its_lock_over(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    # the job's first allocation ran on another node and was stopped seconds ago: its lease is still fresh
    plant(tmp_path / "run", holder(host="n2", pid=1, slurm_job_id="77", renewed=time.time()))
    warnings = []
    with RunLock(tmp_path / "run", warn=warnings.append):
        assert "SLURM job 77 was requeued" in warnings[0]
    # same host, old task still letting go of the OS lock: the requeued one waits for it
    old = RunLock(tmp_path / "run").acquire()
    threading.Timer(0.5, old.release).start()
    with RunLock(tmp_path / "run", stale_after=10) as new:
        assert json.loads(new.path.read_text())["slurm_job_id"] == "77"


def test_takeover_rules():
    me = {"host": "a", "pid": 5, "slurm_job_id": None}
    now = 1000.0
    fresh = {"host": "b", "pid": 1, "renewed": now - 5}
    assert takeover(None, me, locked=True, now=now, stale_after=60) == (True, "")
    assert takeover(fresh, me, locked=True, now=now, stale_after=60) == (False, "")
    assert takeover({**fresh, "renewed": "garbage"}, me, locked=True, now=now, stale_after=60)[0]
    # on this host with no file lock to ask (a filesystem without them), a live pid with a fresh lease holds it
    alive = {"host": "a", "pid": 1, "renewed": now - 5}
    assert takeover(alive, me, locked=False, now=now, stale_after=60) == (False, "")
    assert takeover(alive, me, locked=True, now=now, stale_after=60)[0]


def test_the_lease_is_renewed_while_the_lock_is_held(tmp_path):
    with RunLock(tmp_path / "run", renew_every=0.05) as lock:
        first = json.loads(lock.path.read_text())["renewed"]
        time.sleep(0.3)
        assert json.loads(lock.path.read_text())["renewed"] > first


@pytest.mark.parametrize(
    "env, rank",
    [({}, 0), ({"SLURM_PROCID": "0"}, 0), ({"SLURM_PROCID": "1"}, 1), ({"LOCAL_RANK": "1"}, 1), ({"RANK": "3"}, 3)],
)
def test_only_the_launching_rank_locks(monkeypatch, env, rank):
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launcher_rank() == rank


def test_without_file_locks_the_lease_decides(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunLocked, match=r"renewed \d+ s ago"):
            RunLock(tmp_path / "run").acquire()
    plant(tmp_path / "run", holder(renewed=time.time()))  # a dead pid of this host
    warnings = []
    with RunLock(tmp_path / "run", warn=warnings.append):
        assert "its process is gone" in warnings[0]
