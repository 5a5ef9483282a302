"""A one-machine Slurm for tests: munged, slurmctld and slurmd on this host with a minimal
slurm.conf in a temp folder (Debian packages `slurm-wlm` and `munge`, root). Run by hand:

    .venv/bin/python -m pytest -q tests/test_slurm.py

`start(folder)` returns the environment (SLURM_CONF) under which sbatch/squeue reach it, or
None with the reason when this machine cannot run it."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = """ClusterName=thoughtlab
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SlurmctldPort={port}
SlurmdPort={port2}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
KillWait=5
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=lab Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def missing() -> str | None:
    """Why this machine cannot run the local Slurm, or None."""
    need = [b for b in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scancel") if not shutil.which(b)]
    if need:
        return f"not installed: {', '.join(need)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the local Slurm runs its daemons as root"
    return None


def start(folder: Path) -> tuple[dict, list[subprocess.Popen]]:
    """Start munged (if not running), slurmctld and slurmd; wait until the node is idle."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(CONF.format(host=host, d=folder, port=_free_port(), port2=_free_port(),
                                cpus=os.cpu_count() or 1))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
        subprocess.run(["munged", "--force"], check=True, capture_output=True)
    procs = [subprocess.Popen([exe, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for exe in ("slurmctld", "slurmd")]
    end = time.monotonic() + 60
    while time.monotonic() < end:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        if out.stdout.strip() in ("idle", "mix", "alloc"):
            return env, procs
        time.sleep(1)
    stop(procs)
    raise RuntimeError("the local Slurm did not come up: see " + str(folder / "slurmctld.log"))


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
