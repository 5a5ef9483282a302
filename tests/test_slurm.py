"""The Slurm executor: the batch script (everywhere), and jobs submitted to a real one-machine
Slurm started by the test (tests/slurm_local.py; skipped, with the reason, where Slurm's
Debian packages are not installed)."""
from __future__ import annotations

import subprocess

import pytest
import slurm_local
from conftest import tiny_config

from jobs.manager import cancel, reap, submit
from jobs.queue import queue_positions
from jobs.slurm import batch_script
from lab.errors import LabError
from lab.store import Store, wait_for


def test_batch_script_runs_the_worker_with_the_jobs_processes(tmp_path):
    cfg = tiny_config(executor="slurm", device="cpu", num_processes=2).to_dict()
    script = batch_script({"id": "RUN7", "kind": "train"}, cfg, tmp_path)
    assert "#SBATCH --cpus-per-task=2" in script and "--gpus" not in script
    assert f"#SBATCH --output={tmp_path.resolve()}/runs/RUN7/job.log" in script
    assert "--num_processes 2" in script and "--multi_gpu" in script
    assert script.rstrip().endswith(f"-m jobs.worker RUN7 --data-dir {tmp_path.resolve()}")
    gpu = batch_script({"id": "R", "kind": "train"}, tiny_config(device="gpu", num_gpus=4).to_dict(), tmp_path)
    assert "#SBATCH --gpus=4" in gpu
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_slurm_executor_without_sbatch_is_refused_before_queueing(data_dir, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabError, match="needs Slurm's `sbatch`"):
        submit(tiny_config(executor="slurm"), data_dir)
    assert Store(data_dir).list_runs().empty
    with pytest.raises(LabError, match="executor must be one of"):
        tiny_config(executor="kubernetes").validate()


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    why = slurm_local.missing()
    if why:
        pytest.skip(f"no local Slurm: {why}")
    env, procs = slurm_local.start(tmp_path_factory.mktemp("slurm"))
    mp = pytest.MonkeyPatch()
    mp.setenv("SLURM_CONF", env["SLURM_CONF"])
    yield
    mp.undo()
    slurm_local.stop(procs)


def test_a_run_submitted_to_slurm_finishes_with_its_rows_in_the_store(local_slurm, data_dir):
    store = Store(data_dir).init()
    rid = submit(tiny_config(executor="slurm", max_steps=3), data_dir)
    run = store.get_run(rid)
    assert run["slurm_job"] and run["pid"] is None          # no local supervisor
    place = queue_positions(store).get(rid)
    assert place is None or place.text == f"in Slurm's queue (job {run['slurm_job']})"
    assert wait_for(lambda: (reap(data_dir), store.get_run(rid)["status"])[1] not in ("queued", "running"),
                    timeout=600)
    run = store.get_run(rid)
    assert run["status"] == "finished", (run["error"], open(run["log_path"]).read()[-2000:])
    assert store.metrics([rid], ["loss"])["step"].tolist() == [1, 2, 3]


def test_cancel_of_a_slurm_run_scancels_it(local_slurm, data_dir):
    store = Store(data_dir).init()
    rid = submit(tiny_config(executor="slurm", max_steps=100_000), data_dir)
    assert wait_for(lambda: store.get_run(rid)["status"] == "running", timeout=120)
    assert cancel(rid, data_dir)
    assert wait_for(lambda: store.get_run(rid)["status"] == "cancelled", timeout=60)
    job = store.get_run(rid)["slurm_job"]
    from jobs.slurm import slurm_states
    assert wait_for(lambda: slurm_states([job]) == {}, timeout=60)      # Slurm no longer runs it
