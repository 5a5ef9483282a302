"""How many processes a job runs, on which devices, and the `accelerate launch` flags for it:
shared by the supervisor (one machine) and `--print-launch` (several machines, Slurm).

One process is launched plainly (`--cpu` or one GPU). Several go through accelerate's
multi-process launcher (torchrun): `--multi_gpu` starts one process per rank whatever the
device, and each rank picks gloo on CPU or NCCL on GPU (lab/distributed.py). accelerate's
`--cpu --num_processes N` looks like the CPU equivalent but starts ONE process (its simple
launcher only sets MASTER_ADDR): measured with accelerate 1.15, every rank printed 0 of 1.
"""
from __future__ import annotations

import socket
import sys
from dataclasses import dataclass

LAUNCHER = ["-m", "jobs.launch"]   # `accelerate launch` that passes on the worker's exit status

# FSDP through accelerate's plugin: full sharding of weights, gradients and optimizer state,
# one FSDP unit per transformer block, and full (unsharded) state dicts gathered on rank 0,
# so checkpoints stay plain safetensors folders.
FSDP_ARGS = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_reshard_after_forward", "true",
             "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
             "--fsdp_state_dict_type", "FULL_STATE_DICT", "--fsdp_cpu_ram_efficient_loading", "false"]


@dataclass
class Topology:
    gpus: int           # GPUs each machine's processes use (0 = CPU job)
    processes: int      # processes on each machine
    threads: int = 1    # CPU threads per process (CPU jobs)
    machines: int = 1

    @property
    def world_size(self) -> int:
        return self.processes * self.machines


def job_topology(cfg: dict, kind: str, gpus_here: int) -> Topology:
    """A job's processes on this machine: evaluations one; training one per GPU
    (max(num_gpus, num_processes), at most the GPUs here) or num_processes on CPU.
    Threads are set by the supervisor once it knows its CPU slots."""
    if kind != "train":
        return Topology(gpus=min(1, gpus_here), processes=1)
    procs = max(1, int(cfg.get("num_processes", 1) or 1))
    if gpus_here:
        n = min(max(int(cfg.get("num_gpus", 1) or 1), procs), gpus_here)
        return Topology(gpus=n, processes=n)
    return Topology(gpus=0, processes=procs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_args(cfg: dict, topo: Topology, port: int | None = None, *,
                    machine_rank: int = 0, main_ip: str = "127.0.0.1") -> list[str]:
    """The flags of `accelerate launch` for this config and topology (explicit, so no user
    accelerate config file changes them). `port`: the rendezvous port (each job its own)."""
    # lab/train.py resolves the run's precision ("auto" included) for its Accelerator, which
    # overrides this flag; accelerate launch itself only knows no/bf16/fp16.
    mp = cfg.get("mixed_precision", "auto") or "auto"
    mp = mp if mp in ("bf16", "fp16") else "no"
    args = ["--num_machines", str(topo.machines), "--dynamo_backend", "no",
            "--num_processes", str(topo.world_size),
            "--mixed_precision", ("bf16" if mp == "bf16" else "no") if topo.gpus == 0 else mp]
    if topo.gpus == 0:
        args += ["--num_cpu_threads_per_process", str(topo.threads)]
    if topo.world_size == 1:
        return args + (["--cpu"] if topo.gpus == 0 else [])
    args += FSDP_ARGS if cfg.get("fsdp") else ["--multi_gpu"]
    args += ["--main_process_port", str(port or free_port())]
    if topo.machines > 1:
        args += ["--machine_rank", str(machine_rank), "--main_process_ip", main_ip]
    return args


def worker_command(run: dict, cfg: dict, data_dir, topo: Topology, port: int | None = None) -> list[str]:
    """The job's process: evaluations run the worker directly, training through the launcher."""
    tail = ["-m", "jobs.worker", run["id"], "--data-dir", str(data_dir)]
    if run.get("kind") != "train":
        return [sys.executable] + tail
    return [sys.executable, *LAUNCHER, *accelerate_args(cfg, topo, port)] + tail
