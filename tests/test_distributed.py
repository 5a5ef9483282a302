"""Data parallelism with real processes: 2 CPU ranks (gloo) through the job system, on
tiny-random for a few steps. Jobs that do not depend on each other run at the same time
(module fixtures), so the whole file costs a few job start-ups."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_config
from test_objective_jobs import SMALL

from jobs.manager import read_log_tail, reap, resume, submit
from jobs.topology import Topology, accelerate_args, job_topology
from lab.checkpoint import list_checkpoints
from lab.store import Store, wait_for
from lab import precision

STEPS = 16
# what `mixed_precision: auto` resolves to on this CPU (the run's device text names it)
AUTO_PRECISION = precision.label(precision.resolve("auto", "cpu"))


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _ended(store: Store, rid: str) -> bool:
    reap(store.data_dir)
    return store.get_run(rid)["status"] not in ("queued", "running")


@pytest.fixture(scope="module")
def parallel_slots():
    """Enough CPU slots for the module's jobs to run together (each 2-process job holds 2)."""
    old = os.environ.get("THOUGHTLAB_CPU_JOBS")
    os.environ["THOUGHTLAB_CPU_JOBS"] = "8"
    yield
    if old is None:
        os.environ.pop("THOUGHTLAB_CPU_JOBS")
    else:
        os.environ["THOUGHTLAB_CPU_JOBS"] = old


@pytest.fixture(scope="module")
def ntp_runs(tmp_path_factory, parallel_slots):
    """Three NTP runs on the same windows: 2 processes x batch 2 (twice, one of them killed
    with SIGKILL once it has a checkpoint, then resumed) and 1 process x batch 4."""
    data_dir = tmp_path_factory.mktemp("ddp") / "data"
    store = Store(data_dir).init()
    common = dict(max_steps=STEPS, checkpoint_every=4, sample_every=8, lr=1e-3)
    ids = {"2x2": submit(tiny_config(num_processes=2, batch_size=2, **common), data_dir),
           "1x4": submit(tiny_config(num_processes=1, batch_size=4, **common), data_dir),
           "killed": submit(tiny_config(num_processes=2, batch_size=2, **common), data_dir)}
    killed = ids["killed"]
    assert wait_for(lambda: list_checkpoints(data_dir, killed) or _ended(store, killed), timeout=600)
    assert store.get_run(killed)["status"] == "running", "the run ended before it could be killed"
    os.killpg(int(store.get_run(killed)["pid"]), signal.SIGKILL)   # every process of the job
    assert wait_for(lambda: _ended(store, killed), timeout=30)
    assert store.get_run(killed)["status"] == "failed"
    resume(killed, data_dir)
    assert wait_for(lambda: all(_ended(store, r) for r in ids.values()), timeout=600)
    for rid in ids.values():
        assert store.get_run(rid)["status"] == "finished", store.get_run(rid)["error"]
    return store, ids


def _losses(store: Store, rid: str) -> list[float]:
    df = store.metrics([rid], ["loss"]).sort_values("step")
    assert df["step"].tolist() == list(range(1, STEPS + 1)), "a step is missing or logged twice"
    return df["value"].tolist()


def test_two_processes_of_batch_2_match_one_process_of_batch_4(ntp_runs):
    store, ids = ntp_runs
    assert store.get_run(ids["2x2"])["device"] == f"cpu × 2 processes (gloo, 1 thread each, {AUTO_PRECISION})"
    assert store.get_run(ids["1x4"])["device"].startswith("cpu × 1 process (")
    assert _losses(store, ids["2x2"]) == pytest.approx(_losses(store, ids["1x4"]), rel=1e-4)
    # Tokens and FLOPs are summed over the ranks: the same totals as one process of batch 4.
    flops = store.query("SELECT run_id, max(flops) AS f FROM metrics WHERE name = 'loss' GROUP BY run_id")
    by_run = dict(zip(flops["run_id"], flops["f"]))
    assert by_run[ids["2x2"]] == pytest.approx(by_run[ids["1x4"]], rel=1e-9)


def test_a_killed_two_process_run_resumes_with_no_gap_and_the_same_windows(ntp_runs):
    store, ids = ntp_runs
    # Every step once (checked by _losses), and the same losses as the uninterrupted run: the
    # resume restored the weights, the optimizer and each rank's window order.
    assert _losses(store, ids["killed"]) == pytest.approx(_losses(store, ids["2x2"]), rel=1e-5)
    assert store.get_run(ids["killed"])["attempts"] == 2
    # Checkpoints written once, by rank 0: complete folders, no leftovers of a second writer.
    folder = store.data_dir / "runs" / ids["killed"] / "checkpoints"
    steps = [s for s, _ in list_checkpoints(store.data_dir, ids["killed"])]
    assert steps[-1] == STEPS and all(s % 4 == 0 for s in steps)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def objective_runs(tmp_path_factory, parallel_slots):
    data_dir = tmp_path_factory.mktemp("ddp-objectives") / "data"
    store = Store(data_dir).init()
    ids = {o: submit(tiny_config(objective=o, num_processes=2, max_steps=3, sample_every=1,
                                 checkpoint_every=2, params=SMALL[o]), data_dir) for o in SMALL}
    assert wait_for(lambda: all(_ended(store, r) for r in ids.values()), timeout=600)
    return store, ids


@pytest.mark.parametrize("objective", sorted(SMALL))
def test_every_reasoning_objective_runs_under_two_processes(objective_runs, objective):
    store, ids = objective_runs
    run = store.get_run(ids[objective])
    assert run["status"] == "finished", run["error"]
    assert "2 processes (gloo" in run["device"]
    assert store.metrics([run["id"]], ["loss"])["step"].tolist() == [1, 2, 3]
    th = store.thoughts(run["id"])          # records of the probe batch, written by rank 0 only
    assert not th.empty
    assert not th.duplicated(["step", "sample", "position", "idx"]).any()


def test_the_rlp_ema_teacher_stays_identical_on_every_rank(objective_runs):
    """Each rank updates its own EMA teacher from its own copy of the weights; the loop compares
    their checksums at the end and fails the run if they differ (that check is shown to fail
    on diverged tensors in test_data_parallel_helpers_reduce_and_detect_divergence)."""
    store, ids = objective_runs
    log = read_log_tail(store.get_run(ids["rlp"])["log_path"], 200)
    assert "rlp's objective state identical on all 2 processes" in log


def test_data_parallel_helpers_reduce_and_detect_divergence(tmp_path):
    """lab/distributed.py on 2 real gloo ranks holding different values."""
    topo = Topology(gpus=0, processes=2)
    cmd = [sys.executable, "-m", "jobs.launch", *accelerate_args({}, topo),
           str(ROOT / "tests" / "distributed_probe.py")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    ranks = sorted((json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")),
                   key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == [0, 1] and {r["backend"] for r in ranks} == {"gloo"}
    for r in ranks:   # rank r logged loss 2 + 2r, 10 + r tokens, 100 (r + 1) FLOPs
        assert (r["loss"], r["tokens"], r["flops"]) == (3.0, 21, 300.0)
        assert r["metrics"] == {"shared": 1.5, "rank0_only": 5.0}
        assert "differs between the 2 processes" in r["diverged"]
    assert ranks[0]["seed"] != ranks[1]["seed"] and ranks[0]["seed"] == 7


def test_launch_flags_for_processes_fsdp_and_machines():
    assert job_topology({"num_processes": 3}, "train", 0) == Topology(gpus=0, processes=3)
    assert job_topology({"num_processes": 3}, "eval", 0).processes == 1
    assert job_topology({"num_gpus": 2, "num_processes": 1}, "train", 8) == Topology(gpus=2, processes=2)
    assert job_topology({"num_processes": 4}, "train", 2) == Topology(gpus=2, processes=2)
    one = accelerate_args({}, Topology(gpus=0, processes=1, threads=2))
    assert "--cpu" in one and "--multi_gpu" not in one
    two = accelerate_args({}, Topology(gpus=0, processes=2), port=29999)
    assert "--multi_gpu" in two and two[two.index("--main_process_port") + 1] == "29999"
    fsdp = accelerate_args({"fsdp": True}, Topology(gpus=2, processes=2))
    assert "--use_fsdp" in fsdp and "--multi_gpu" not in fsdp
    nodes = accelerate_args({}, Topology(gpus=4, processes=4, machines=2), port=1, machine_rank=1,
                            main_ip="10.0.0.1")
    assert nodes[nodes.index("--num_processes") + 1] == "8"
    assert nodes[nodes.index("--machine_rank") + 1] == "1" and "10.0.0.1" in nodes


def test_two_machine_launch_on_localhost_finishes_with_one_set_of_rows(data_dir):
    """`--print-launch --num-machines 2`'s lines run as two machines (ranks 0 and 1) on this
    one, main process 127.0.0.1: the run finishes, every step logged once, by rank 0."""
    from jobs.multinode import export_multinode
    from jobs.queue import queue_positions
    from jobs.topology import free_port
    cfg = tiny_config(device="cpu", max_steps=3, sample_every=1)
    launch = export_multinode(cfg, data_dir, machines=2, port=free_port())
    store = Store(data_dir)
    assert queue_positions(store)[launch.run_id].text == "launched outside the lab's queue"
    assert [" --machine_rank 0 " in launch.commands[0], " --machine_rank 1 " in launch.commands[1]] == [True, True]
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           "CUDA_VISIBLE_DEVICES": ""}
    machines = [subprocess.Popen(["bash", "-c", line], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for line in launch.commands]
    logs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], logs[0][-2000:] + logs[1][-2000:]
    run = store.get_run(launch.run_id)
    assert run["status"] == "finished" and run["started_at"] is not None, run["error"]
    assert run["device"] == f"cpu × 2 processes (gloo, 1 thread each, {AUTO_PRECISION})"
    assert store.metrics([launch.run_id], ["loss"])["step"].tolist() == [1, 2, 3]
    tokens = store.tokens(launch.run_id)
    assert not tokens.empty and not tokens.duplicated(["step", "sample", "position"]).any()


def test_sbatch_script_runs_every_machine_with_its_rank(tmp_path):
    from jobs.multinode import sbatch_script
    from lab.config import RunConfig
    cfg = RunConfig(model="tiny-random", device="gpu", num_gpus=4, mixed_precision="bf16")
    script = sbatch_script(cfg, "RUN1", tmp_path / "shared data", machines=3, port=29555)
    assert "#SBATCH --nodes=3" in script and "#SBATCH --gpus-per-node=4" in script
    assert "--num_processes 12" in script and "--multi_gpu" in script and "--main_process_port 29555" in script
    assert '--machine_rank "$SLURM_NODEID" --main_process_ip "$MAIN_IP"' in script
    assert "jobs.worker RUN1 --data-dir" in script and "shared data" in script
    syntax = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    cpu = sbatch_script(RunConfig(device="cpu", num_processes=2), "RUN2", tmp_path, machines=2, port=1)
    assert "--gpus-per-node" not in cpu and "--num_processes 4" in cpu


@pytest.mark.parametrize("settings,message", [
    (dict(fsdp=True, device="cpu", num_processes=2), "fsdp needs GPUs"),
    (dict(fsdp=True, device="gpu"), "set num_gpus (or num_processes) to 2"),
    (dict(fsdp=True, device="gpu", num_gpus=2, objective="rlp"), "fsdp runs the ntp objective only"),
    (dict(num_processes=0), "num_processes must be at least 1"),
])
def test_process_and_fsdp_settings_are_checked(settings, message):
    from lab.config import RunConfig
    from lab.errors import LabError
    with pytest.raises(LabError, match=re.escape(message)):
        RunConfig.from_dict(settings).validate()


def test_fsdp_on_a_machine_without_gpus_is_refused_before_queueing(data_dir):
    from lab.errors import LabError
    with pytest.raises(LabError, match="no GPU was found"):
        submit(tiny_config(fsdp=True, num_processes=2), data_dir)
    assert Store(data_dir).list_runs().empty


def test_launch_page_sets_processes_and_exports_a_multi_machine_launch(tmp_path, monkeypatch):
    from conftest import app_page
    at = app_page("pages/launch.py", tmp_path, monkeypatch)
    at.selectbox(key="preset").set_value("quick-cpu").run()
    at.number_input(key="f_num_processes").set_value(2).run()
    assert "--num-processes 2" in at.code[0].value
    at.number_input(key="f_num_machines").set_value(3).run()
    next(b for b in at.button if b.label.startswith("Create the run")).click().run()
    assert not at.error, [e.value for e in at.error]
    text = at.code[-1].value
    assert "--machine_rank 2" in text and "#SBATCH --nodes=3" in text
    runs = Store(tmp_path).list_runs()
    assert len(runs) == 1 and runs["id"].iloc[0] in text and runs["status"].iloc[0] == "queued"


def test_a_two_process_job_holds_two_cpu_slots(data_dir, monkeypatch):
    """Two CPU slots: a 2-process job takes both, so a 1-process job queued after it waits."""
    monkeypatch.setenv("THOUGHTLAB_CPU_JOBS", "2")
    store = Store(data_dir).init()
    big = submit(tiny_config(num_processes=2, max_steps=4), data_dir)
    small = submit(tiny_config(max_steps=2), data_dir)
    assert wait_for(lambda: _ended(store, big) and _ended(store, small), timeout=600)
    a, b = store.get_run(big), store.get_run(small)
    assert a["status"] == b["status"] == "finished", (a["error"], b["error"])
    assert b["started_at"] >= a["finished_at"]
    assert "slot [0, 1]" in read_log_tail(a["log_path"], 200)


def _rank_pid(run_id: str, rank: int) -> int | None:
    """The pid of the worker process of `run_id` with that RANK (from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"jobs.worker" in cmd and run_id.encode() in cmd and f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def test_a_rank_killed_alone_fails_the_run_with_its_signal_not_as_a_cancel(data_dir):
    """SIGKILL of rank 1 only (as the out-of-memory killer would): the launcher stops rank 0
    with SIGTERM, which must not read as a user's cancel; the run fails naming SIGKILL."""
    store = Store(data_dir).init()
    rid = submit(tiny_config(num_processes=2, max_steps=100_000), data_dir)
    assert wait_for(lambda: int(store.get_run(rid)["step"] or 0) >= 2 and _rank_pid(rid, 1), timeout=600)
    os.kill(_rank_pid(rid, 1), signal.SIGKILL)
    assert wait_for(lambda: _ended(store, rid), timeout=60)
    # rank 0 may record its broken-connection error first; the supervisor then names the signal
    assert wait_for(lambda: not _alive(store.get_run(rid)["pid"]), timeout=60)
    run = store.get_run(rid)
    assert run["status"] == "failed", run["error"]
    assert "SIGKILL" in run["error"], read_log_tail(run.get("log_path"), 30)
