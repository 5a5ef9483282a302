"""A run exported for several machines: the `accelerate launch` command each machine runs, and
a Slurm batch script that runs them, for one RunConfig and a data folder every machine shares.

The run's row is created in the shared data folder first (queued, marked as launched outside
the lab's queue): each machine's processes then run the same worker as a local job. Rank 0 (on
machine 0) does all the writing: it opens the DuckDB file in short sessions under the store's
`flock`, writes checkpoints and sets the run's status; the other ranks only read the corpus and
the model. So the shared file system must give rank 0 a working `flock` and let the other
machines read what it writes (docs: README "Scaling out").
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from jobs.queue import EXTERNAL_PHASE
from jobs.topology import Topology, accelerate_args
from lab.config import RunConfig
from lab.errors import LabError

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class MultiNodeLaunch:
    run_id: str
    commands: list[str]      # one shell line per machine rank, in rank order
    sbatch: str              # a Slurm batch script running all of them

    def text(self) -> str:
        lines = [f"# Run {self.run_id}: on machine R (0 = the main process's machine), run line R."]
        lines += self.commands
        lines += ["", "# Or submit this script with sbatch (it starts every machine's line):", self.sbatch]
        return "\n".join(lines)


def machine_topology(cfg: RunConfig, machines: int) -> Topology:
    """Per machine: with device=gpu, max(num_gpus, num_processes) GPUs and as many processes;
    otherwise num_processes CPU processes (the cluster's machines are not this one, so `auto`
    cannot be resolved here: it exports CPU machines)."""
    if cfg.device != "gpu":
        return Topology(gpus=0, processes=cfg.num_processes, threads=1, machines=machines)
    n = max(cfg.num_gpus, cfg.num_processes)
    return Topology(gpus=n, processes=n, machines=machines)


def worker_tail(run_id: str, data_dir: str | Path) -> list[str]:
    return ["-m", "jobs.worker", run_id, "--data-dir", str(Path(data_dir).resolve())]


def machine_commands(cfg: RunConfig, run_id: str, data_dir: str | Path, machines: int,
                     main_ip: str, port: int) -> list[str]:
    """The shell line each machine rank runs, from the lab's folder."""
    topo = machine_topology(cfg, machines)
    env = f"cd {shlex.quote(str(ROOT))} && PYTHONPATH={shlex.quote(str(ROOT))} "
    return [env + shlex.join(["accelerate", "launch", *accelerate_args(
                cfg.to_dict(), topo, port, machine_rank=rank, main_ip=main_ip),
                *worker_tail(run_id, data_dir)]) for rank in range(machines)]


def sbatch_script(cfg: RunConfig, run_id: str, data_dir: str | Path, machines: int, port: int,
                  *, threads_per_process: int = 1) -> str:
    """A Slurm batch script: one task per machine, each running `accelerate launch` with its
    machine rank ($SLURM_NODEID) and the first machine of the allocation as the main process."""
    topo = machine_topology(cfg, machines)
    topo.threads = threads_per_process
    data = Path(data_dir).resolve()
    head = ["#!/bin/bash", f"#SBATCH --job-name=thoughtlab-{run_id}", f"#SBATCH --nodes={machines}",
            "#SBATCH --ntasks-per-node=1",
            f"#SBATCH --cpus-per-task={topo.processes * max(1, threads_per_process)}",
            f"#SBATCH --output={data}/runs/{run_id}/slurm-%j.log"]
    if topo.gpus:
        head.append(f"#SBATCH --gpus-per-node={topo.gpus}")
    # The launcher's flags, with this node's rank and the main node filled in on each node.
    flags = accelerate_args(cfg.to_dict(), topo, port, machine_rank=0, main_ip="MAIN")
    flags = flags[:flags.index("--machine_rank")] if "--machine_rank" in flags else flags
    inner = ('exec "$@" --machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP" '
             + shlex.join(worker_tail(run_id, data_dir)))
    body = [f"cd {shlex.quote(str(ROOT))}",
            f"export PYTHONPATH={shlex.quote(str(ROOT))} PYTHONUNBUFFERED=1",
            'export MAIN_IP="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
            "srun --kill-on-bad-exit=1 bash -c " + shlex.quote(inner) + " _ "
            + shlex.join(["accelerate", "launch", *flags])]
    return "\n".join(head + ["set -euo pipefail"] + body) + "\n"


def export_multinode(cfg: RunConfig, data_dir: str | Path = "data", *, machines: int,
                     main_ip: str = "127.0.0.1", port: int = 29500, command: str | None = None) -> MultiNodeLaunch:
    """Validate `cfg`, create its run (queued, outside the local queue) and return the launch
    lines for `machines` machines plus a Slurm script."""
    from jobs.manager import cli_command, validate
    from lab.store import Store
    if not 1 <= machines <= 1024:
        raise LabError(f"num_machines must be between 1 and 1024 (got {machines}).")
    if not 1 <= port <= 65535:
        raise LabError(f"main_process_port must be a TCP port, 1 to 65535 (got {port}).")
    if not main_ip.strip() or any(c.isspace() for c in main_ip):
        raise LabError(f"main_process_ip must be a host name or address (got {main_ip!r}).")
    validate(cfg, data_dir)
    store = Store(data_dir).require_writable()
    run_id = store.create_run(config=cfg.to_dict(), command=command or cli_command(cfg, data_dir))
    store.update_run(run_id, phase=EXTERNAL_PHASE)
    (Path(data_dir) / "runs" / run_id).mkdir(parents=True, exist_ok=True)   # Slurm's log goes there
    return MultiNodeLaunch(run_id, machine_commands(cfg, run_id, data_dir, machines, main_ip, port),
                           sbatch_script(cfg, run_id, data_dir, machines, port))
