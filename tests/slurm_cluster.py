"""A private single-node Slurm cluster for the scheduler tests (PLATFORM.md, "Single-node Slurm
for tests"): munged, slurmctld and slurmd run from a scratch directory with their own munge key,
munge socket and TCP ports, so they touch nothing of the machine's own Slurm or munge set-up and
two test sessions can run side by side.

    cluster = SlurmCluster(Path("/tmp/x")); cluster.start(); ...; cluster.stop()

As a pytest fixture (session scope): `slurm`, imported by the test modules. It installs the Debian
packages with apt-get when they are missing (as root) and skips with the reason when that fails.
Run by hand: `python3 tests/slurm_cluster.py DIR` starts a cluster and prints the SLURM_CONF to
export; `python3 tests/slurm_cluster.py --stop DIR` stops it.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
DAEMONS = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd"]
CLIENTS = ["sbatch", "squeue", "scontrol", "sinfo", "srun", "scancel"]
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
                "PREEMPTED"}


def _have_slurm():
    return all(os.access(d, os.X_OK) for d in DAEMONS) and all(shutil.which(c) for c in CLIENTS)


def ensure_installed(log=print):
    """Returns None when Slurm and munge are usable, else the reason they are not."""
    if _have_slurm():
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root (apt-get install " + " ".join(PACKAGES) + ")"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and there is no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES]
    log("installing " + " ".join(PACKAGES) + " with apt-get")
    out = ""
    for attempt in range(2):
        if attempt == 1:   # the package lists may be missing or stale
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        out = proc.stdout + proc.stderr
        if proc.returncode == 0 and _have_slurm():
            return None
    return "apt-get could not install Slurm: " + " | ".join(out.strip().splitlines()[-3:])


def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _read_pid(path):
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def parse_records(text):
    """`scontrol show job -o` output -> list of dicts (one line per job, Key=Value fields)."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line or "=" not in line:
            continue
        rec = {}
        # Values may contain spaces only in a few fields (Command, WorkDir with spaces): split on
        # " Key=" boundaries.
        for m in re.finditer(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(\S*(?:\s+(?![A-Za-z][A-Za-z0-9_:/]*=)\S+)*)", line):
            rec[m.group(1)] = m.group(2)
        records.append(rec)
    return records


class SlurmCluster:
    def __init__(self, root, cpus=16, munge_dir=None):
        self.root = Path(root)
        self.cpus = cpus
        self.conf = self.root / "slurm.conf"
        # munged runs as user munge, which must reach its directory: give it one of its own when
        # root's directory is private (pytest's temporary directories are).
        self.munge_dir = Path(munge_dir) if munge_dir else self.root / "munge"
        self.socket = self.munge_dir / "munge.socket.2"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        for k in list(self.env):   # a cluster of our own: nothing of an outer job leaks in
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF":
                del self.env[k]
        self.started = []

    # -- set-up -------------------------------------------------------------------------
    def _write_config(self):
        ctld_port, slurmd_port = _free_ports(2)
        d = self.root
        for sub in ("state", "spool", "log", "tmp"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""# written by tests/slurm_cluster.py
ClusterName=entrank-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10,socket={self.socket}
MailProg=/bin/true
MpiDefault=pmix
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
EnforcePartLimits=ALL
SlurmdParameters=config_overrides
KillWait=10
MinJobAge=600
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
# TmpFS holds the PMIx plugin's per-step directories (spmix_appdir_<uid>_<job>.<step>): a cluster of
# our own must not meet another's (job ids start at 1 in every fresh cluster) in /tmp.
TmpFS={d}/tmp
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
NodeName=localhost CPUs={self.cpus} Sockets=1 CoresPerSocket={self.cpus} ThreadsPerCore=1 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start_munge(self):
        m = self.munge_dir
        m.mkdir(parents=True, exist_ok=True)
        key = m / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(m, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        os.chmod(m, 0o755)
        os.chmod(key, 0o400)
        cmd = ["runuser", "-u", "munge", "--", "/usr/sbin/munged", f"--socket={self.socket}", f"--key-file={key}",
               f"--pid-file={m}/munged.pid", f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"munged failed to start: {proc.stdout}{proc.stderr}")
        self.started.append(m / "munged.pid")

    def start(self, timeout=30):
        self.root.mkdir(parents=True, exist_ok=True)
        if self.munge_dir.parent == self.root:
            os.chmod(self.root, 0o755)   # munged (user munge) must reach its directory below
        self._write_config()
        self._start_munge()
        for exe, pid in (("/usr/sbin/slurmctld", "slurmctld.pid"), ("/usr/sbin/slurmd", "slurmd.pid")):
            args = [exe] + (["-N", "localhost"] if exe.endswith("slurmd") else ["-c"])
            proc = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"{exe} failed to start: {proc.stdout}{proc.stderr}\n{self.logs()}")
            self.started.append(self.root / pid)
        t0 = time.time()
        while time.time() - t0 < timeout:
            proc = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if proc.stdout.strip() == "idle":
                return self
            time.sleep(0.3)
        raise RuntimeError(f"the node did not become idle in {timeout} s: sinfo says {proc.stdout!r} {proc.stderr!r}\n"
                           + self.logs())

    def stop(self):
        if self.conf.exists():
            subprocess.run(["scancel", "--user", str(os.getuid())], env=self.env, capture_output=True, timeout=30)
            t0 = time.time()
            while time.time() - t0 < 20:
                proc = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, capture_output=True, text=True)
                if proc.returncode != 0 or not proc.stdout.strip():
                    break
                time.sleep(0.5)
        # Daemons in the reverse order of their start, each by the PID it wrote.
        for pid_file in reversed(self.started):
            pid = _read_pid(pid_file)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            t0 = time.time()
            while _alive(pid) and time.time() - t0 < 10:
                time.sleep(0.1)
        self.started = []

    def logs(self, lines=30):
        out = []
        for f in sorted((self.root / "log").glob("*.log")) + [self.munge_dir / "munged.log"]:
            if f.exists():
                out.append(f"---- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    # -- use ------------------------------------------------------------------------------
    def run(self, *cmd, check=True, timeout=120, **kw):
        proc = subprocess.run([str(c) for c in cmd], env=kw.pop("env", self.env), capture_output=True, text=True,
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc

    def jobs(self, job_id):
        """scontrol's records of a job (one per array task once the tasks have started)."""
        proc = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return parse_records(proc.stdout) if proc.returncode == 0 else []

    def wait(self, job_ids, timeout=180, poll=1.0):
        """Waits until every job (every array task) is in a final state; returns {JobId: record}."""
        t0 = time.time()
        while True:
            recs = [r for j in job_ids for r in self.jobs(str(j))]
            if recs and all(r.get("JobState") in FINAL_STATES for r in recs):
                return {r["JobId"]: r for r in recs}
            if time.time() - t0 > timeout:
                states = {r.get("JobId"): (r.get("JobState"), r.get("Reason")) for r in recs}
                raise TimeoutError(f"jobs {job_ids} not finished after {timeout} s: {states}\n{self.logs()}")
            time.sleep(poll)


def start_cluster(root):
    reason = ensure_installed()
    if reason:
        raise RuntimeError(reason)
    return SlurmCluster(root).start()


try:
    import pytest

    @pytest.fixture(scope="session")
    def slurm(tmp_path_factory):
        """The cluster; its config, state and daemon logs stay in pytest's temporary directory
        (the last few sessions' are kept) for a look after a failure."""
        reason = ensure_installed()
        if reason:
            pytest.skip(f"Slurm tests skipped: {reason}")
        root = tmp_path_factory.mktemp("slurm-cluster")
        munge_dir = Path(tempfile.mkdtemp(prefix="entrank-munge-"))
        os.chmod(munge_dir, 0o755)
        cluster = SlurmCluster(root, munge_dir=munge_dir / "munge")
        try:
            cluster.start()
        except Exception as e:   # noqa: BLE001 - report why, then clean up
            cluster.stop()
            shutil.rmtree(munge_dir, ignore_errors=True)
            pytest.fail(f"could not start the test Slurm cluster in {root}: {e}")
        yield cluster
        cluster.stop()
        shutil.rmtree(munge_dir, ignore_errors=True)
except ImportError:   # used as a script without pytest
    pass


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--stop":
        c = SlurmCluster(sys.argv[2])
        c.started = [c.munge_dir / "munged.pid", c.root / "slurmctld.pid", c.root / "slurmd.pid"]
        c.stop()
    elif len(sys.argv) == 2:
        c = start_cluster(sys.argv[1])
        print(f"export SLURM_CONF={c.conf}")
    else:
        sys.exit(__doc__)
