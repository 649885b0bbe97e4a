"""A throw-away single-node SLURM cluster in a temporary folder, for tests/test_slurm.py.

munged with its own key, slurmctld and slurmd on loopback ports, and accounting (slurmdbd on a throw-away
MariaDB) so that ``sacct``, which submitit polls for job states, answers as on a real cluster. Needs root (the
daemons run as ``SlurmUser=root``) and Debian's packages: ``make slurm`` installs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGES = "slurm-wlm munge slurmdbd mariadb-server-core mariadb-client-core"
BINARIES = ("munged", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd",
            "sinfo", "squeue", "sbatch", "scancel", "sacct")
PARTITION = "lab"


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: its config file, partition, node and the environment its clients need."""

    conf: Path
    partition: str
    node: str
    folder: Path

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` with ``SLURM_CONF`` pointing at this cluster (sbatch, sinfo, sacct and submitit read it)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *cmd: str) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        return subprocess.run(cmd, env=self.env, check=True, capture_output=True, text=True, timeout=30).stdout


def missing_requirement() -> str | None:
    """Why no throw-away cluster can start here (a missing binary, not root), or None."""
    absent = [name for name in BINARIES if not shutil.which(name, path=f"/usr/sbin:{os.environ['PATH']}")]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing: apt-get install {PACKAGES})"
    if os.geteuid() != 0:
        return "the throw-away SLURM cluster runs its daemons as root (SlurmUser=root); run the test as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_line() -> tuple[str, str]:
    """This host's node name and its ``NodeName=...`` line with the real CPUs and memory (``slurmd -C``)."""
    out = subprocess.run([_sbin("slurmd"), "-C"], check=True, capture_output=True, text=True).stdout
    line = out.splitlines()[0]
    if not line.startswith("NodeName="):
        raise RuntimeError(f"slurmd -C printed {out!r}: expected a NodeName= line")
    return line.split()[0].removeprefix("NodeName="), line


def _sbin(name: str) -> str:
    found = shutil.which(name, path=f"/usr/sbin:{os.environ['PATH']}")
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (apt-get install {PACKAGES})")
    return found


def write_conf(folder: Path, node: str, node_line: str, munge_socket: Path, dbd_port: int) -> Path:
    """A minimal slurm.conf for one node, its state under ``folder``, accounting through slurmdbd on ``dbd_port``."""
    conf = folder / "slurm.conf"
    lines = [
        "ClusterName=dropoutlab",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/slurmdbd",
        "AccountingStorageHost=127.0.0.1",
        f"AccountingStoragePort={dbd_port}",
        f"AccountingStoragePass={munge_socket}",  # for slurmdbd: the munge socket of its connections
        "SelectType=select/cons_tres",  # jobs share the node by cores (the default select/linear: one job a node)
        "SelectTypeParameters=CR_Core",
        "MpiDefault=none",
        f"{node_line} NodeAddr=127.0.0.1 State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def write_dbd_conf(folder: Path, node: str, munge_socket: Path, dbd_port: int, db_port: int) -> Path:
    """slurmdbd.conf next to slurm.conf (slurmdbd looks for it there), storing in the MariaDB on ``db_port``."""
    conf = folder / "slurmdbd.conf"
    lines = ["AuthType=auth/munge", f"AuthInfo=socket={munge_socket}", f"DbdHost={node}", "DbdAddr=127.0.0.1",
             f"DbdPort={dbd_port}", "SlurmUser=root", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
             f"StoragePort={db_port}", "StorageUser=root", "StorageLoc=slurm_acct_db",
             f"PidFile={folder / 'slurmdbd.pid'}"]
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)  # slurmdbd refuses a readable one
    return conf


class _Daemons:
    """The cluster's daemons by name, each in its own session, its output (its log) in ``folder/NAME.out``."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, *cmd: str) -> None:
        name = Path(cmd[0]).name
        with open(self.folder / f"{name}.out", "w") as out:
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def running(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def output(self, name: str, lines: int = 15) -> str:
        """The last ``lines`` lines daemon ``name`` printed (the daemons run in the foreground, logging there)."""
        return "\n".join((self.folder / f"{name}.out").read_text(errors="replace").splitlines()[-lines:])

    def wait(self, what: str, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready`` until true; fail, naming ``what``, if a daemon exits or ``timeout`` s pass."""
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [name for name in self.procs if not self.running(name)]
            if dead:
                raise RuntimeError(f"{dead[0]} exited (status {self.procs[dead[0]].returncode}) while waiting for "
                                   f"{what}:\n{self.output(dead[0])}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n"
                                   + "\n".join(f"{name}: {self.output(name)}" for name in self.procs))
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM each daemon's session, newest first; SIGKILL one that lingers."""
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers(cluster: SlurmCluster, *cmd: str) -> str | None:
    """``cmd``'s stdout, or None while the cluster does not answer it yet."""
    try:
        out = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return out.stdout if out.returncode == 0 else None


def processes_of(conf: Path) -> list[int]:
    """Live processes started for the cluster of ``conf``: its daemons, slurmstepd and the jobs' tasks, all of which
    carry ``SLURM_CONF=conf`` in their environment (zombies excluded)."""
    marker = f"SLURM_CONF={conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone, or not ours to read
        if marker in environ.split(b"\0") and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _end_leftovers(conf: Path, timeout: float = 30) -> None:
    """Wait for the cluster's processes to end by themselves (slurmstepd finishing a cancelled job), then SIGKILL."""
    deadline = time.monotonic() + timeout
    while processes_of(conf) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in processes_of(conf):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cancel_jobs(cluster: SlurmCluster, timeout: float = 60) -> None:
    """Cancel every job and wait until the queue is empty."""
    if _answers(cluster, "scancel", "--full", "--partition", cluster.partition) is None:
        return
    deadline = time.monotonic() + timeout
    while _answers(cluster, "squeue", "-h", "-o", "%i") and time.monotonic() < deadline:
        time.sleep(0.2)


@contextlib.contextmanager
def throwaway_slurm(start_timeout: float = 60) -> Iterator[SlurmCluster]:
    """Start munged, MariaDB, slurmdbd, slurmctld and slurmd in a temporary folder, wait until the node is idle
    and ``sacct`` answers, yield the cluster; then cancel its jobs, stop everything and remove the folder."""
    reason = missing_requirement()
    if reason:
        raise FileNotFoundError(reason)
    folder = Path(tempfile.mkdtemp(prefix="dropout-lab-slurm-"))
    folder.chmod(0o755)  # munged wants the folders above its socket searchable by everyone
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(mode=0o755)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    munge_socket = folder / "munge" / "munge.socket"
    node, node_line = _node_line()
    db_port, dbd_port = _free_port(), _free_port()
    conf = write_conf(folder, node, node_line, munge_socket, dbd_port)
    write_dbd_conf(folder, node, munge_socket, dbd_port, db_port)
    cluster = SlurmCluster(conf=conf, partition=PARTITION, node=node, folder=folder)
    daemons = _Daemons(folder, cluster.env)
    try:
        daemons.start(_sbin("munged"), "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
                      f"--pid-file={folder / 'munge' / 'munged.pid'}", f"--log-file={folder / 'munge' / 'log'}",
                      f"--seed-file={folder / 'munge' / 'seed'}")
        subprocess.run([_sbin("mariadb-install-db"), "--no-defaults", f"--datadir={folder / 'db'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, cwd=folder)
        daemons.start(_sbin("mariadbd"), "--no-defaults", f"--datadir={folder / 'db'}", "--user=root",
                      "--bind-address=127.0.0.1", f"--port={db_port}", f"--socket={folder / 'mysqld.sock'}",
                      f"--pid-file={folder / 'mysqld.pid'}", "--skip-name-resolve", "--innodb-buffer-pool-size=16M")
        daemons.wait("munged's socket and MariaDB's port", lambda: munge_socket.exists() and _listening(db_port),
                     start_timeout)
        daemons.start(_sbin("slurmdbd"), "-D")  # reads slurmdbd.conf from SLURM_CONF's folder
        daemons.wait("slurmdbd's port", lambda: _listening(dbd_port), start_timeout)
        daemons.start(_sbin("slurmctld"), "-D", "-i", "-f", str(conf))
        daemons.start(_sbin("slurmd"), "-D", "-f", str(conf), "-N", node)
        daemons.wait(f"node {node} idle", lambda: _answers(cluster, "sinfo", "-h", "-n", node, "-o", "%T") == "idle\n",
                     start_timeout)  # registered with slurmctld, nothing running
        daemons.wait("sacct", lambda: _answers(cluster, "sacct", "-n", "-X") is not None, start_timeout)
        yield cluster
    finally:
        if daemons.running("slurmctld"):
            _cancel_jobs(cluster)
        daemons.stop()
        _end_leftovers(conf)
        shutil.rmtree(folder, ignore_errors=True)
