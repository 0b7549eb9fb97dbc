"""A real SLURM cluster of emulated nodes on localhost, for tests: ``with LocalCluster() as cluster: ...``.

One munged, one slurmctld and one ``slurmd -N <node>`` per node run in the foreground as children of this
process, with their config, sockets, state, spool, pid and log files in a temporary folder; leaving the block
cancels the cluster's jobs and stops exactly those processes. Debian's slurmd supports several daemons per
host (``-N``), each on its own port, so a 2-node job really runs two tasks that talk over TCP.

Missing binaries are installed with apt (``slurmctld slurmd slurm-client munge``) when this runs as root; when
that is impossible :class:`SlurmUnavailable` says why. There is no accounting (no slurmdbd), so jobs are
followed with ``scontrol show job`` instead of ``sacct``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo", "munged")
SBIN_PATH = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


class SlurmUnavailable(RuntimeError):
    """SLURM is not installed and cannot be installed here (the message says why)."""


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join((os.environ.get("PATH", ""), SBIN_PATH)))


def ensure_installed(timeout: float = 300.0) -> None:
    """Install the SLURM and munge packages with apt when a binary is missing; raise :class:`SlurmUnavailable`."""
    missing = [b for b in BINARIES if _which(b) is None]
    if not missing:
        return
    if _which("apt-get") is None:
        raise SlurmUnavailable(f"{', '.join(missing)} missing and there is no apt-get to install them")
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"{', '.join(missing)} missing and installing them needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + timeout
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        try:
            done = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic())
            )
        except subprocess.TimeoutExpired as err:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` did not finish in {timeout:.0f} s") from err
        if done.returncode:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed ({done.returncode}): {tail[0]}")
    still = [b for b in BINARIES if _which(b) is None]
    if still:
        raise SlurmUnavailable(f"{', '.join(still)} still missing after installing {', '.join(PACKAGES)}")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    """``nodes`` emulated SLURM nodes ``n1..nN`` on 127.0.0.1, each offering ``cpus_per_node`` CPUs.

    Attributes:
        root: the temporary folder of config, state and logs (``log/`` holds the daemons' logs).
        env: ``os.environ`` plus ``SLURM_CONF`` and the sbin folders on ``PATH``; pass it to every slurm client.
    """

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, start_timeout: float = 60.0, install: bool = True):
        self.nodes = [f"n{i + 1}" for i in range(nodes)]
        self.cpus_per_node = cpus_per_node
        self.start_timeout = start_timeout
        self.install = install
        self.root: Path | None = None
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen] = []
        self._logs: list = []

    def __enter__(self) -> LocalCluster:
        if self.install:
            ensure_installed()
        elif missing := [b for b in BINARIES if _which(b) is None]:
            raise SlurmUnavailable(f"{', '.join(missing)} missing")
        if os.geteuid() != 0:
            raise SlurmUnavailable("the local daemons run as root (SlurmUser=root)")
        self.root = Path(tempfile.mkdtemp(prefix="miras-slurm-"))
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.root / "slurm.conf"),
            "PATH": os.pathsep.join((os.environ.get("PATH", ""), SBIN_PATH)),
        }
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._procs:
            # jobs first, so that no slurmstepd outlives its slurmd
            ids = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.split()
            if ids:
                self.run("scancel", *ids, check=False, timeout=10)
                self._wait(lambda: not self.run("squeue", "-h", check=False, timeout=10).stdout.strip(), 15)
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
        self._procs = []
        for log in self._logs:
            log.close()
        self._logs = []

    def run(self, *cmd: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run a slurm client command (``sbatch``, ``squeue``, ...) against this cluster; stdout/stderr as text."""
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as ``{field: value}`` (``JobState``, ``Restarts``, ``ExitCode``, ...); {} when gone."""
        done = self.run("scontrol", "-o", "show", "job", str(job_id), check=False, timeout=10)
        fields = {}
        for token in done.stdout.split():
            key, sep, value = token.partition("=")
            if sep and key not in fields:
                fields[key] = value
        return fields

    def wait_job(self, job_id: str, timeout: float) -> dict[str, str]:
        """Poll until job ``job_id`` reaches a final state; return its ``scontrol show job`` fields.

        Raises TimeoutError (with the job's state) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in FINAL_STATES:
                return info
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout:.0f} s: {info.get('JobState')}")
            time.sleep(0.5)

    def _start(self) -> None:
        root = self.root
        for sub in ("state", "log", "munge", *(f"spool/{n}" for n in self.nodes)):
            (root / sub).mkdir(parents=True, exist_ok=True)
        key = root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        (root / "munge").chmod(0o700)
        sock = root / "munge" / "munge.socket"
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={sock}",
                f"--pid-file={root / 'munge' / 'munged.pid'}",
                f"--log-file={root / 'log' / 'munged.log'}",
                f"--seed-file={root / 'munge' / 'munged.seed'}",
            ],
        )
        self._wait(sock.exists, 10, "munged did not create its socket")
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        (root / "slurm.conf").write_text(self._config(ctld_port, node_ports, sock))
        self._spawn("slurmctld", [_which("slurmctld"), "-D"])
        for node in self.nodes:
            self._spawn(f"slurmd-{node}", [_which("slurmd"), "-D", "-N", node])

        def all_idle() -> bool:
            states = self.run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10).stdout.split()
            return states.count("idle") == len(self.nodes)

        self._wait(all_idle, self.start_timeout, f"nodes not idle after {self.start_timeout:.0f} s (see {root}/log)")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 (closed in __exit__)
        self._logs.append(log)
        self._procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def _wait(self, ready, timeout: float, message: str = "") -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return True
            dead = [p.args[0] for p in self._procs if p.poll() is not None]
            if dead and message:
                raise RuntimeError(f"{', '.join(map(str, dead))} exited early (see {self.root}/log)")
            time.sleep(0.1)
        if message:
            raise TimeoutError(message)
        return False

    def _config(self, ctld_port: int, node_ports: list[int], munge_socket: Path) -> str:
        r = self.root
        nodes = "\n".join(
            f"NodeName={n} NodeHostname=localhost NodeAddr=127.0.0.1 Port={p} CPUs={self.cpus_per_node} "
            "RealMemory=2000 State=UNKNOWN"
            for n, p in zip(self.nodes, node_ports, strict=True)
        )
        # cred_expire: a requeued job waits this long before it may start again (default 120 s)
        return f"""\
ClusterName=miraslocal
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=600
SlurmctldPort={ctld_port}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
{nodes}
PartitionName=debug Nodes={",".join(self.nodes)} Default=YES MaxTime=INFINITE State=UP
"""
