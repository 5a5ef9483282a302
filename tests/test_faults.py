"""Faults: kills at random points, during a checkpoint write and during a log flush; OOM
reporting; several jobs and a busy dashboard for a while without lost rows."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import duckdb
import pytest
import sandbox
from conftest import ROOT, job_ended, tiny_config

from jobs.manager import cancel, resume, submit
from jobs.worker import _explain
from lab.checkpoint import latest_checkpoint, list_checkpoints
from lab.config import RunConfig
from lab.store import Store, wait_for


def cfg(**kw) -> RunConfig:
    return tiny_config(**{"max_steps": 40, "sample_every": 3, "checkpoint_every": 1, **kw})


finished = job_ended


def test_kill_9_at_random_points_then_resume_to_the_end(data_dir):
    """checkpoint_every=1 makes most kills land in or near a checkpoint write or a flush."""
    rng = random.Random(7)
    store = Store(data_dir).init()
    rid = submit(cfg(max_steps=60), data_dir)
    start = 0
    for attempt in range(2):
        # A resumed run keeps its old step count while queued: wait for it to run and
        # log fresh steps, so the kill lands in this attempt's work.
        assert wait_for(lambda: store.get_run(rid)["status"] == "running"
                        and int(store.get_run(rid)["step"] or 0) >= start + 3, timeout=120)
        time.sleep(rng.uniform(0.0, 1.0))
        assert store.get_run(rid)["status"] == "running", "the job ended before it could be killed"
        os.kill(int(store.get_run(rid)["worker_pid"]), signal.SIGKILL)
        assert wait_for(lambda: finished(store, rid), timeout=15)
        run = store.get_run(rid)
        assert run["status"] == "failed"        # the worker's own signal, not the launcher's code
        assert run["error"].startswith("The worker was killed by signal SIGKILL"), run["error"]
        duckdb.connect(str(data_dir / "lab.duckdb"), read_only=True).close()   # file is sound
        steps = store.metrics([rid], ["loss"])["step"].tolist()
        assert steps == list(range(1, len(steps) + 1))                          # no gap, no dup
        ck = latest_checkpoint(data_dir, rid)
        assert ck is not None and (ck / "COMPLETE").exists()
        start = int(run["step"] or 0)
        resume(rid, data_dir)
    assert wait_for(lambda: finished(store, rid), timeout=240)
    assert store.get_run(rid)["status"] == "finished", store.get_run(rid)["error"]
    assert store.metrics([rid], ["loss"])["step"].tolist() == list(range(1, 61))
    assert store.get_run(rid)["attempts"] == 3


def test_kill_before_the_first_checkpoint_then_resume_logs_each_step_once(data_dir):
    """A real job killed (SIGKILL) before it wrote any checkpoint resumes from step 0: the rows
    it logged before the kill are cleared, so every step has one row of each metric and one
    set of token records. (The job is long and cancelled once the resume has logged past the
    kill, so no timing of the machine can end it before the kill.)"""
    store = Store(data_dir).init()
    rid = submit(cfg(max_steps=1_000_000, checkpoint_every=0, sample_every=2), data_dir)

    def logged(at_least: int) -> bool:
        run = store.get_run(rid)
        return run["status"] == "running" and int(run["step"] or 0) >= at_least
    assert wait_for(lambda: logged(4), timeout=180)
    assert latest_checkpoint(data_dir, rid) is None
    os.kill(int(store.get_run(rid)["worker_pid"]), signal.SIGKILL)
    assert wait_for(lambda: finished(store, rid), timeout=30)
    assert store.get_run(rid)["status"] == "failed"
    killed_at = int(store.get_run(rid)["step"])
    assert store.metrics([rid], ["loss"])["step"].tolist() == list(range(1, killed_at + 1))
    resume(rid, data_dir)
    assert wait_for(lambda: logged(killed_at + 3), timeout=180)
    cancel(rid, data_dir)
    assert wait_for(lambda: finished(store, rid), timeout=60)
    run = store.get_run(rid)
    assert run["status"] == "cancelled", run["error"]
    last = int(run["step"])
    m = store.metrics([rid])
    per_step = m.groupby(["step", "name"]).size()
    assert per_step.max() == 1, per_step[per_step > 1].head()            # no duplicated row
    assert m[m["name"] == "loss"]["step"].tolist() == list(range(1, last + 1))
    tokens = store.tokens(rid)
    assert tokens.groupby(["step", "sample", "position"]).size().max() == 1
    assert sorted(tokens["step"].unique()) == [1] + list(range(2, last + 1, 2))


def test_the_signal_that_killed_the_worker_alone_is_reported(data_dir):
    """Only the worker is killed (its launcher, `accelerate launch`, and the supervisor live
    on): the run's error names the worker's own signal, not the launcher's exit code. Here a
    SIGHUP (a signal the worker does not handle); SIGKILL in the test above."""
    sig = signal.SIGHUP
    store = Store(data_dir).init()
    rid = submit(cfg(max_steps=1_000_000, checkpoint_every=0), data_dir)
    assert wait_for(lambda: store.get_run(rid)["status"] == "running"
                    and int(store.get_run(rid)["step"] or 0) >= 2, timeout=180)
    os.kill(int(store.get_run(rid)["worker_pid"]), sig)
    assert wait_for(lambda: finished(store, rid), timeout=30)
    run = store.get_run(rid)
    assert run["status"] == "failed"
    assert run["error"].splitlines()[0].startswith(f"The worker was killed by signal {sig.name}"), run["error"]


def test_the_launcher_decodes_the_worker_status_of_one_and_of_several_processes():
    """jobs/launch.py reads the worker's return code from accelerate's exception: one process
    (CalledProcessError) or several (torch.distributed's ChildFailedError, first failure)."""
    import subprocess

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from jobs.launch import worker_returncode
    from jobs.supervisor import describe_exit
    assert worker_returncode(subprocess.CalledProcessError(-9, ["python"])) == -9
    failures = {1: ProcessFailure(local_rank=1, pid=11, exitcode=-6, error_file="/nonexistent")}
    assert worker_returncode(ChildFailedError("jobs.worker", failures)) == -6
    assert worker_returncode(ValueError("bad flag")) is None
    assert describe_exit(128 + 9, launcher=True).startswith("The worker was killed by signal SIGKILL")
    assert describe_exit(-15, launcher=True).startswith("The job's launcher")
    assert describe_exit(-11).startswith("The worker was killed by signal SIGSEGV")
    assert describe_exit(1, launcher=True) == "The worker exited with code 1."


def test_half_written_checkpoint_is_ignored_on_resume(data_dir):
    from lab.train import train
    store = Store(data_dir).init()
    c = cfg(max_steps=4, checkpoint_every=2).validate()
    rid = store.create_run(config=c.to_dict())
    train(c, rid, store)
    # Simulate a kill in the middle of writing step 6's checkpoint and a corrupted later copy.
    good = latest_checkpoint(data_dir, rid)
    partial = good.with_name("step-000006.tmp")
    shutil.copytree(good, partial)
    (partial / "model.safetensors").write_bytes(b"truncated")
    no_marker = good.with_name("step-000008")
    shutil.copytree(good, no_marker)
    (no_marker / "COMPLETE").unlink()
    assert latest_checkpoint(data_dir, rid) == good
    assert [s for s, _ in list_checkpoints(data_dir, rid)] == [2, 4]


def test_corrupted_checkpoint_gives_a_clear_error(data_dir):
    from lab.errors import LabError
    from lab.train import train
    store = Store(data_dir).init()
    c = cfg(max_steps=2, checkpoint_every=1).validate()
    rid = store.create_run(config=c.to_dict())
    train(c, rid, store)
    (latest_checkpoint(data_dir, rid) / "model.safetensors").write_bytes(b"\x00" * 100)
    c.max_steps = 4
    with pytest.raises(LabError, match="corrupted"):
        train(c, rid, store)


def _flip_last_byte(path) -> None:
    """Damage a tensor's bytes and leave the safetensors header intact (it still parses)."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_tensor_bytes_are_caught_by_the_checkpoint_checksums(data_dir, capsys):
    """safetensors has no checksum: a flipped byte in a tensor loads without complaint unless
    the checkpoint's MANIFEST.json (sha256 per file) is checked, on resume and on load."""
    from lab.checkpoint import load_checkpoint_state
    from lab.errors import LabError
    from lab.models import load_model
    from lab.train import train
    store = Store(data_dir).init()
    c = cfg(max_steps=2, checkpoint_every=1).validate()
    rid = store.create_run(config=c.to_dict())
    train(c, rid, store)
    ck = latest_checkpoint(data_dir, rid)
    assert set(json.loads((ck / "MANIFEST.json").read_text())["sha256"]) == \
        {p.name for p in ck.glob("*.safetensors")} >= {"model.safetensors", "optimizer.safetensors"}
    _flip_last_byte(ck / "model.safetensors")
    c.max_steps = 4
    with pytest.raises(LabError, match=f"Checkpoint {ck} is corrupted: model.safetensors"):
        train(c, rid, store)                                   # resume
    with pytest.raises(LabError, match="model.safetensors does not match the checksum"):
        load_model(f"run:{rid}", data_dir)                     # an evaluation or the Playground
    _flip_last_byte(ck / "model.safetensors")                  # repaired
    _flip_last_byte(ck / "optimizer.safetensors")
    with pytest.raises(LabError, match="optimizer.safetensors does not match"):
        load_checkpoint_state(ck, {}, None)
    _flip_last_byte(ck / "optimizer.safetensors")
    # A checkpoint written before checksums existed still loads, and the log says it is unchecked.
    (ck / "MANIFEST.json").unlink()
    capsys.readouterr()
    assert train(c, rid, store).steps == 4
    assert "loaded without a checksum test" in capsys.readouterr().err


def _die_mid_transaction(path: str, run_id: str) -> None:
    store = Store(path)
    with store.write() as con:
        con.execute("INSERT INTO metrics VALUES (?, 999, 'loss', 1.0, 0.0, 0.0)", [run_id])
        os.kill(os.getpid(), signal.SIGKILL)        # killed during a log flush, before COMMIT


def test_kill_during_a_log_flush_loses_only_that_flush(data_dir):
    store = Store(data_dir).init()
    rid = store.create_run(config={"objective": "ntp"})
    store.append({"metrics": [{"run_id": rid, "step": 1, "name": "loss", "value": 2.0}]})
    p = mp.get_context("spawn").Process(target=_die_mid_transaction, args=(str(data_dir), rid))
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL
    assert store.metrics([rid])["step"].tolist() == [1]           # earlier rows kept, flush dropped
    store.append({"metrics": [{"run_id": rid, "step": 2, "name": "loss", "value": 1.5}]})  # lock freed
    assert store.metrics([rid])["step"].tolist() == [1, 2]


def _write_past_the_file_size_limit(path: str, run_id: str, queue) -> None:
    """In a child process whose files may not grow past 2 MB (RLIMIT_FSIZE: the kernel fails
    such a write with EFBIG, in DuckDB's and safetensors' own code): a log flush too big for the
    database, then a checkpoint too big for the disk."""
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of the default kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
    from lab.checkpoint import save_checkpoint
    from lab.errors import LabError
    from lab.models import load_model
    out = {}
    store = Store(path)
    rows = [{"run_id": run_id, "step": i, "name": f"m{i % 97}", "value": float(i)} for i in range(300_000)]
    try:
        store.append({"metrics": rows})
    except LabError as e:
        out["append"] = str(e)
    except Exception as e:  # noqa: BLE001 - what the test must not see
        out["append"] = f"RAW {type(e).__name__}: {e}"
    lm = load_model("tiny-random")                        # 13 MB of weights: more than the limit
    try:
        save_checkpoint(path, run_id, 1, lm.model, lm.tokenizer, {}, None, {"step": 1}, {})
    except LabError as e:
        out["checkpoint"] = str(e)
    except Exception as e:  # noqa: BLE001
        out["checkpoint"] = f"RAW {type(e).__name__}: {e}"
    out["metrics_rows"] = len(store.metrics([run_id]))   # the database is still usable
    queue.put(out)


def test_a_write_past_the_file_size_limit_reports_its_cause_and_leaves_no_tmp(data_dir):
    """Failed writes report their own cause (not the ROLLBACK's "no transaction is active"),
    and a failed checkpoint removes its step-N.tmp. Works on any machine: the file size limit
    (RLIMIT_FSIZE) makes the real writes fail in the kernel. The next test uses a real full disk
    where this machine allows a tmpfs."""
    store = Store(data_dir).init()
    rid = store.create_run(config={"objective": "ntp"})
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_write_past_the_file_size_limit, args=(str(data_dir), rid, queue))
    p.start()
    out = queue.get(timeout=240)
    p.join(timeout=30)
    for what in ("append", "checkpoint"):
        assert out[what].startswith(f"Could not "), out[what]
        assert "File too large" in out[what] and str(data_dir) in out[what] and "Free space" in out[what]
    assert "database lab.duckdb" in out["append"] and "checkpoint step-000001" in out["checkpoint"]
    assert out["metrics_rows"] == 0                       # the failed flush left nothing behind
    assert not list((data_dir / "runs" / rid / "checkpoints").glob("*"))   # no step-1.tmp left


FULL_DISK_DRIVER = r"""
import json, os, subprocess, sys
mount = sys.argv[1]
data = os.path.join(mount, "data")
lab = [sys.executable, "-m", "lab"]
tiny = ["--model", "tiny-random", "--corpus-docs", "60", "--seq-len", "32", "--batch-size", "2",
        "--checkpoint-every", "0", "--data-dir", data]
def free():
    st = os.statvfs(mount)
    return st.f_bavail * st.f_frsize
def cli(*args):
    r = subprocess.run(lab + list(args), capture_output=True, text=True, timeout=300)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}
out = {"init": cli("runs", "--data-dir", data), "free_before": free()}
# 1. A job whose final checkpoint (13 MB of weights) does not fit on the 8 MB disk.
out["job"] = cli("train", *tiny, "--max-steps", "3")
out["free_after"] = free()
out["sizes"] = {os.path.relpath(os.path.join(d, n), data): os.path.getsize(os.path.join(d, n))
                for d, dirs, files in os.walk(data) for n in files}
out["left"] = [os.path.relpath(os.path.join(d, n), data) for d, dirs, files in os.walk(data)
               for n in dirs + files if ".tmp" in n or ".part" in n]
# 2. The disk completely full: a new job cannot even be recorded.
fd = os.open(os.path.join(mount, "filler"), os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"x" * 65536)
except OSError:
    while True:
        try:
            os.write(fd, b"x" * 512)
        except OSError:
            break
os.close(fd)
out["full"] = cli("train", *tiny, "--max-steps", "3", "--detach")
out["listing_on_full_disk"] = cli("runs", "--data-dir", data)
print(json.dumps(out))
"""


@pytest.mark.skipif(not sandbox.available(), reason="this machine allows no mount namespace for a tmpfs "
                    "(the file size limit test covers the same code paths)")
def test_a_full_disk_is_reported_as_such_and_a_failed_checkpoint_frees_its_space(tmp_path):
    """A real full disk: an 8 MB tmpfs as the data folder, in a private mount namespace."""
    mount = tmp_path / "disk"
    mount.mkdir()
    r = subprocess.run(sandbox.sandboxed(["tmpfs", 8192, mount], [sys.executable, "-c", FULL_DISK_DRIVER, mount]),
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    job = out["job"]
    assert out["init"]["rc"] == 0 and job["rc"] == 1, job
    data = mount / "data"
    assert f"failed: Could not write checkpoint step-000003 of run" in job["err"], job["err"]
    assert f"in {data}: No space left on device" in job["err"] and "Free space there" in job["err"]
    assert out["left"] == []                                    # no step-3.tmp filling the disk
    assert not [f for f in out["sizes"] if "checkpoints" in f]  # nothing of it at all
    assert out["free_after"] + sum(out["sizes"].values()) >= out["free_before"] - 300_000, out
    full = out["full"]
    assert full["rc"] == 2 and "Traceback" not in full["err"] and "rollback" not in full["err"], full
    assert f"Could not write the database lab.duckdb in {data}: No space left on device" in full["err"]
    assert out["listing_on_full_disk"]["rc"] == 0 and "failed" in out["listing_on_full_disk"]["out"]


def test_out_of_memory_and_cuda_errors_are_reported_as_such():
    import torch
    msg = _explain(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert msg.startswith("Out of memory") and "batch_size" in msg
    assert _explain(RuntimeError("CUDA error: device-side assert triggered")).startswith("CUDA error")
    assert "unexpected error" in _explain(ValueError("boom"))


SOAK_SECONDS = float(os.environ.get("THOUGHTLAB_SOAK_SECONDS", "90"))


@pytest.mark.timeout(SOAK_SECONDS + 300)
def test_three_jobs_and_a_dashboard_polling_every_second(data_dir, monkeypatch):
    """Three jobs and a dashboard refreshing every second (90 s in the suite; a longer soak:
    THOUGHTLAB_SOAK_SECONDS=1800): no lock error, and no lost row: every step a job reports as
    logged is in the database, with all its metrics and its token records."""
    monkeypatch.setenv("THOUGHTLAB_CPU_JOBS", "3")
    store = Store(data_dir).init()
    ids = [submit(cfg(max_steps=1_000_000, checkpoint_every=25, sample_every=10, name=f"soak{i}"),
                  data_dir) for i in range(3)]
    polls, started = 0, time.monotonic()
    while time.monotonic() - started < SOAK_SECONDS:
        assert not any(finished(store, i) for i in ids), [store.get_run(i)["error"] for i in ids]
        # What the Runs page does on each refresh.
        store.list_runs()
        store.metrics(ids, ["loss", "entropy/mean"])
        for i in ids:
            store.tokens(i)
        polls += 1
        time.sleep(1.0)
    for i in ids:
        cancel(i, data_dir)
    assert wait_for(lambda: all(finished(store, i) for i in ids), timeout=60)
    for i in ids:
        run = store.get_run(i)
        assert run["status"] == "cancelled", run["error"]
        logged = int(run["step"])
        assert logged >= 20, f"{i} logged only {logged} steps in {SOAK_SECONDS:.0f} s"
        m = store.metrics([i])
        assert m[m["name"] == "loss"]["step"].tolist() == list(range(1, logged + 1))
        assert m.groupby("step").size().nunique() == 1      # same metric count at every step
        expected = [1] + list(range(10, logged + 1, 10))
        assert sorted(store.tokens(i)["step"].unique()) == expected
    assert polls >= SOAK_SECONDS / 4          # the dashboard kept refreshing throughout
