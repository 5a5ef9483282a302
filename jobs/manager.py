"""Submitting, watching and stopping background jobs.

A job is a detached process tree in its own session (so the web server can restart, and
cancel can stop the whole group):

    supervisor (python -m jobs.supervisor RUN_ID)   waits for a device slot, then
      └─ jobs.launch (accelerate launch) ...         exits with the worker's own status
           └─ python -m jobs.worker RUN_ID           runs training / evaluation

The supervisor records the final status even when the worker dies without a word
(SIGKILL, out of memory); `reap` marks a run failed when its supervisor is gone too.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from lab.config import RunConfig
from lab.errors import LabError
from lab.store import ACTIVE, Store, now

# lab.models / lab.corpora import torch: they are imported inside the functions that need them,
# so the supervisor processes (one per queued job) stay small.

ROOT = Path(__file__).resolve().parent.parent


def cli_command(cfg: RunConfig, data_dir: str | Path = "data") -> str:
    """The shell command equivalent to a config (shown by the web form)."""
    default = RunConfig()
    parts = ["python", "-m", "lab", "train"]
    flags = {"objective": cfg.objective, "model": cfg.model, "corpus": cfg.corpus}
    for f, v in cfg.to_dict().items():
        if f in ("params",) or f in flags:
            continue
        if v != getattr(default, f):
            flags[f] = v
    for k, v in flags.items():
        text = str(v).lower() if isinstance(v, bool) else ",".join(v) if isinstance(v, list) else str(v)
        parts += [f"--{k.replace('_', '-')}", text]
    for k, v in (cfg.params or {}).items():
        parts += ["--param", f"{k}={v}"]
    if str(data_dir) != "data":
        parts += ["--data-dir", str(data_dir)]
    return shlex.join(parts)


def validate(cfg: RunConfig, data_dir: str | Path) -> RunConfig:
    """Everything checked before a job starts: settings, model spec, corpus. A model
    `run:X` where X is a run this one waits for (`after`) and that has not ended yet (an
    experiment's pretraining) has no checkpoint yet: the job checks it when it starts."""
    from lab.corpora import check_corpus
    from lab.models import check_model_spec
    Store(data_dir).require_writable()
    cfg.validate()
    pending = continues_from(cfg)
    if not (pending and (Store(data_dir).get_run(pending) or {}).get("status") in ACTIVE):
        check_model_spec(cfg.model, data_dir, cfg.trust_remote_code)
    check_corpus(cfg.corpus, cfg.text_field)
    if cfg.device == "gpu" and not gpu_count():
        raise LabError("device is 'gpu' but no GPU was found on this machine; use 'cpu' or 'auto'.")
    if cfg.executor == "slurm":
        from jobs.slurm import require_sbatch
        require_sbatch()
    if cfg.fsdp and not gpu_count() and cfg.executor == "local":
        from lab.config import FSDP_NEEDS_GPUS
        raise LabError(FSDP_NEEDS_GPUS + "; no GPU was found on this machine.")
    if cfg.after:
        store = Store(data_dir)
        unknown = [r for r in cfg.after if store.get_run(r) is None]
        if unknown:
            raise LabError(f"after names unknown run id(s): {', '.join(unknown)}. "
                           "`python -m lab runs` lists them.")
    return cfg


def continues_from(cfg: RunConfig) -> str | None:
    """The run whose checkpoint this training run starts from, when it also waits for it
    (`after`): that run must have finished before this one can start."""
    from lab.evaluation.runner import run_id_of
    rid = run_id_of(cfg.model)
    return rid if rid and rid in cfg.after else None


def submit(cfg: RunConfig, data_dir: str | Path = "data", *, command: str | None = None,
           kind: str = "train", start: bool = True) -> str:
    """Validate, record the run as queued, and start its supervisor (with start=False the
    caller starts it later: an experiment's driver does). Returns the run id."""
    store = Store(data_dir).require_writable()
    if kind == "train":
        validate(cfg, data_dir)
    run_id = store.create_run(config=cfg.to_dict(), kind=kind,
                              command=command or cli_command(cfg, data_dir))
    if start:
        start_supervisor(store, run_id)
    return run_id


def submit_eval(spec, data_dir: str | Path = "data", *, after: list[str] | None = None,
                experiment: str = "", name: str = "") -> str:
    """Queue an evaluation (lab.evaluation.EvalSpec) as a background job. With `after`, it
    waits until those training runs finished (and is cancelled if one of them did not)."""
    problems = spec.problems()
    if problems:
        raise LabError("Invalid evaluation:\n- " + "\n- ".join(problems))
    config = eval_job_config(spec, experiment, name)
    return _queue_eval(config, spec.model, after, eval_command(spec), data_dir)


def eval_command(spec) -> str:
    return shlex.join(["python", "-m", "lab", "eval", "--model", spec.model, "--benchmark",
                       spec.benchmark] + (["--data", spec.data] if spec.data else [])
                      + (["--limit", str(spec.limit)] if spec.limit else []))


def submit_evals(specs: list, data_dir: str | Path = "data", *, after: list[str] | None = None,
                 experiment: str = "", name: str = "", start: bool = True) -> str:
    """Queue one job that evaluates one model on several benchmarks (EvalSpecs of the same
    model): one process and one model load for all of them. Their evals get the ids
    `<job id>-<benchmark>`. Returns the job id."""
    if not specs or len({s.model for s in specs}) != 1:
        raise LabError("submit_evals needs at least one EvalSpec, all of the same model.")
    problems = [p for s in specs for p in s.problems()]
    if problems:
        raise LabError("Invalid evaluation:\n- " + "\n- ".join(problems))
    config = {**eval_job_config(specs[0], experiment, name), "specs": [s.to_dict() for s in specs]}
    command = " && ".join(eval_command(s) for s in specs)
    return _queue_eval(config, specs[0].model, after, command, data_dir, start=start)


EVAL_JOB = {"objective": "eval", "max_steps": 100}   # an eval job's step is its progress in %


def eval_job_config(spec, experiment: str = "", name: str = "") -> dict[str, Any]:
    """The `runs.config` of an eval job (its EvalSpec plus the fields the pages list)."""
    return {**spec.to_dict(), **EVAL_JOB, "experiment": experiment,
            "name": name or f"{spec.benchmark} · {spec.model}", "corpus": spec.data or "builtin"}


def submit_nt_reasoning(model: str, data_dir: str | Path = "data", *, reference: str = "",
                        after: list[str] | None = None, experiment: str = "", **settings) -> str:
    """Queue RPT's next-token reasoning accuracy evaluation (lab/nt_reasoning.py) as a job."""
    from lab.models import check_model_spec
    from lab.nt_reasoning import job_config
    cfg = job_config(model, reference=reference, **settings)
    check_model_spec(cfg["reference"], data_dir)
    cfg.update(experiment=experiment, name=f"next-token reasoning · {model}", corpus="builtin:test")
    return _queue_eval(cfg, model, after, data_dir=data_dir,
                       command=f"(web) next-token reasoning of {model} vs reference {cfg['reference']}")


def _queue_eval(config: dict, model: str, after: list[str] | None, command: str,
                data_dir: str | Path, start: bool = True) -> str:
    """Record an eval job as queued and start its supervisor. An eval of a run's checkpoint
    waits for that run when it is still queued or running (a model spec is checked at once)."""
    from lab.evaluation.runner import run_id_of
    from lab.models import check_model_spec
    store = Store(data_dir).require_writable()
    after = list(dict.fromkeys(after or []))
    rid = run_id_of(model)
    if rid:
        run = store.get_run(rid)
        if run is None:
            raise LabError(f"No run with id {rid!r} in {store.path}. `python -m lab runs` lists them.")
        if run["status"] in ACTIVE and rid not in after:
            after.append(rid)
    elif not after:
        check_model_spec(model, data_dir)
    run_id = store.create_run(config={**config, **EVAL_JOB, "after": after},
                              kind="eval", command=command)
    if start:
        start_supervisor(store, run_id)
    return run_id


def start_supervisor(store: Store, run_id: str) -> None:
    """Start the run's job: a local supervisor, or an sbatch for executor 'slurm'."""
    if json.loads((store.get_run(run_id) or {}).get("config") or "{}").get("executor") == "slurm":
        from jobs.slurm import submit_to_slurm
        submit_to_slurm(store, run_id)
        return
    log = log_path(store.data_dir, run_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.supervisor", run_id, "--data-dir", str(store.data_dir)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=_child_env())
    # Reap the child when it exits so it never lingers as a zombie of the web server.
    threading.Thread(target=proc.wait, daemon=True).start()
    store.update_run(run_id, pid=proc.pid, log_path=str(log), heartbeat_at=now())


def resume(run_id: str, data_dir: str | Path = "data") -> str:
    """Continue a failed or cancelled run from its last complete checkpoint (same run id)."""
    store = Store(data_dir).require_writable()
    run = store.require_run(run_id)
    if run["status"] in ACTIVE:
        raise LabError(f"Run {run_id} is {run['status']}; only a stopped run can be resumed.")
    from jobs.worker import cancel_marker
    cancel_marker(store.data_dir, run_id).unlink(missing_ok=True)
    store.update_run(run_id, status="queued", error=None, finished_at=None, queued_at=now(),
                     phase="")   # back of the queue (jobs/queue.py)
    start_supervisor(store, run_id)
    return run_id


def cancel(run_id: str, data_dir: str | Path = "data") -> bool:
    """Stop a queued or running job (its whole process group). Returns False if not active."""
    store = Store(data_dir).require_writable()
    run = store.require_run(run_id)
    if run["status"] not in ACTIVE:
        return False
    from jobs.worker import cancel_marker
    marker = cancel_marker(store.data_dir, run_id)     # tells the worker the SIGTERM is a cancel
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    if isinstance(run.get("slurm_job"), str) and run["slurm_job"]:
        from jobs.slurm import cancel_slurm
        cancel_slurm(run["slurm_job"])        # the worker records the cancel if it had started
        store.set_status_if(run_id, ["queued"], status="cancelled", finished_at=now(),
                            error="cancelled while in Slurm's queue")
        return True
    pid = run.get("pid")
    if pid and _alive(int(pid)):
        try:
            os.killpg(int(pid), signal.SIGTERM)   # the supervisor marks the run cancelled
        except ProcessLookupError:
            pass
        threading.Thread(target=_kill_later, args=(int(pid),), daemon=True).start()
    else:
        store.set_status_if(run_id, ACTIVE, status="cancelled", finished_at=now())
    return True


def _kill_later(pgid: int, grace: float = 15.0) -> None:
    import time
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if not _alive(pgid):
            return
        time.sleep(0.5)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def reap(data_dir: str | Path = "data") -> list[str]:
    """Mark active runs whose supervisor process is gone as failed. Returns their ids.
    Called by the pages on every refresh and by the CLI, so a `kill -9` shows within seconds."""
    store = Store(data_dir)
    if store.read_only:      # nothing can be marked; the pages and `lab runs` still read
        return []
    from jobs.slurm import reap_slurm
    active = store.active_runs().to_dict("records")
    dead = reap_slurm(store, active)
    for run in active:
        pid = run.get("pid")
        if pid is None or (isinstance(pid, float) and pid != pid):
            continue  # being started right now
        if not _alive(int(pid)):
            msg = ("The job's processes ended without reporting a result (killed, e.g. by "
                   "`kill -9` or the out-of-memory killer, or the machine restarted). "
                   + _tail_hint(run.get("log_path")))
            if store.set_status_if(run["id"], ACTIVE, status="failed", error=msg, finished_at=now()):
                dead.append(run["id"])
    return dead


def _tail_hint(log: str | None) -> str:
    tail = read_log_tail(log, 3).strip()
    return f"Last log lines:\n{tail}" if tail else ""


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def log_path(data_dir: str | Path, run_id: str) -> Path:
    return Path(data_dir) / "runs" / run_id / "job.log"


def read_log_tail(path: str | Path | None, lines: int = 40) -> str:
    if not path or not Path(path).exists():
        return ""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 64_000))
        data = f.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


_GPU_CACHE: list[dict[str, Any]] | None = None


def gpus() -> list[dict[str, Any]]:
    """GPUs found by a short subprocess, so the web server never initialises CUDA itself."""
    global _GPU_CACHE
    if _GPU_CACHE is None and not (Path("/dev/nvidia0").exists() or os.environ.get("THOUGHTLAB_PROBE_GPU")):
        _GPU_CACHE = []  # no NVIDIA device node: skip the slow torch import
    if _GPU_CACHE is None:
        code = ("import json, torch\n"
                "print(json.dumps([{'index': i, 'name': torch.cuda.get_device_name(i), "
                "'memory_gb': round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)} "
                "for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []))")
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 timeout=60).stdout.strip().splitlines()
            _GPU_CACHE = json.loads(out[-1]) if out else []
        except (subprocess.SubprocessError, OSError, json.JSONDecodeError, IndexError):
            _GPU_CACHE = []
    return _GPU_CACHE


def gpu_count() -> int:
    return len(gpus())


def cpu_info() -> dict[str, Any]:
    mem = 0.0
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return {"cores": os.cpu_count() or 1, "memory_gb": round(mem, 1)}
