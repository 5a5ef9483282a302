"""The job system with real background processes: integration, concurrency, kill -9, cancel,
CLI messages."""
import os
import signal
import time

import duckdb
import pytest
from conftest import TINY, lab_cli, tiny_config

from jobs.manager import cancel, reap, resume, submit
from lab.store import Store, wait_for


def status(store: Store, rid: str) -> str:
    reap(store.data_dir)
    return store.get_run(rid)["status"]


def test_cli_train_runs_a_job_and_rows_land_in_duckdb(data_dir):
    r = lab_cli("train", "--objective", "ntp", *TINY, "--max-steps", "5", "--name", "cli run",
                data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    rid = r.stdout.splitlines()[0].strip()
    con = duckdb.connect(str(data_dir / "lab.duckdb"), read_only=True)   # as a user would
    run = con.execute("SELECT status, name, step, command, git_commit FROM runs WHERE id = ?", [rid]).fetchone()
    assert run[:3] == ("finished", "cli run", 5)
    assert "--max-steps 5" in run[3] and run[4]
    assert con.execute("SELECT count(*) FROM metrics WHERE run_id = ? AND name = 'loss'", [rid]).fetchone()[0] == 5
    assert con.execute("SELECT count(*) FROM tokens WHERE run_id = ?", [rid]).fetchone()[0] > 0
    con.close()
    listing = lab_cli("runs", data_dir=data_dir)
    assert rid in listing.stdout and "finished" in listing.stdout and "cli run" in listing.stdout


def test_two_concurrent_jobs_with_polling_dashboard(data_dir, monkeypatch):
    monkeypatch.setenv("THOUGHTLAB_CPU_JOBS", "2")
    store = Store(data_dir).init()
    ids = [submit(tiny_config(max_steps=12, name=f"job{i}"), data_dir) for i in range(2)]
    both_running = False
    while any(status(store, i) in ("queued", "running") for i in ids):
        runs = store.list_runs()
        both_running |= (runs["status"] == "running").sum() == 2
        store.metrics(ids)
        time.sleep(0.2)
    assert [store.get_run(i)["status"] for i in ids] == ["finished", "finished"], \
        [store.get_run(i)["error"] for i in ids]
    assert both_running, "the two jobs should have run at the same time"
    for i in ids:
        steps = store.metrics([i], ["loss"])["step"].tolist()
        assert steps == list(range(1, 13))      # every logged step present, none twice


def test_cpu_queue_runs_one_job_at_a_time_by_default(data_dir, monkeypatch):
    monkeypatch.delenv("THOUGHTLAB_CPU_JOBS", raising=False)
    store = Store(data_dir).init()
    a = submit(tiny_config(max_steps=3), data_dir)
    b = submit(tiny_config(max_steps=3), data_dir)
    overlap = False
    while any(status(store, i) in ("queued", "running") for i in (a, b)):
        overlap |= [store.get_run(i)["status"] for i in (a, b)] == ["running", "running"]
        time.sleep(0.2)
    assert not overlap
    assert store.get_run(a)["status"] == store.get_run(b)["status"] == "finished"


def test_jobs_start_first_in_first_out_and_show_their_queue_position(data_dir, monkeypatch):
    """One CPU slot; a training run, then an evaluation, then another training run: they start in
    that order (before, whichever supervisor polled first when the slot freed won, so a later
    experiment job could overtake an earlier eval). A job waiting for a run is not in line."""
    from jobs.manager import submit_eval
    from jobs.queue import queue_positions
    from lab.evaluation import EvalSpec
    monkeypatch.delenv("THOUGHTLAB_CPU_JOBS", raising=False)
    store = Store(data_dir).init()
    first = submit(tiny_config(max_steps=3), data_dir)
    ev = submit_eval(EvalSpec(model="tiny-random", benchmark="math-test", limit=2, max_new_tokens=4),
                     data_dir)
    later = submit(tiny_config(max_steps=2), data_dir)
    blocked = submit(tiny_config(max_steps=2, after=[later]), data_dir)
    assert wait_for(lambda: status(store, first) == "running", timeout=120)
    places = queue_positions(store)
    assert [places[r].position for r in (ev, later)] == [1, 2]
    assert places[blocked].position is None and places[blocked].waits_for == [later]
    listing = lab_cli("runs", "--all", data_dir=data_dir).stdout
    assert next(line for line in listing.splitlines() if line.startswith(ev)).endswith("#1 in queue")
    assert f"waits for {later}" in listing
    order = [first, ev, later, blocked]
    assert wait_for(lambda: all(status(store, r) not in ("queued", "running") for r in order), timeout=600)
    runs = [store.get_run(r) for r in order]
    assert [r["status"] for r in runs] == ["finished"] * 4, [r["error"] for r in runs]
    started = [r["started_at"] for r in runs]
    assert started == sorted(started), "jobs started out of the order they were queued in"


def test_kill_9_of_a_running_job_is_shown_failed_and_keeps_metrics(data_dir):
    store = Store(data_dir).init()
    rid = submit(tiny_config(max_steps=2000, checkpoint_every=0), data_dir)
    assert wait_for(lambda: len(store.metrics([rid], ["loss"])) >= 3, timeout=120)
    run = store.get_run(rid)
    os.killpg(int(run["pid"]), signal.SIGKILL)       # the whole job, supervisor included
    killed_at = time.monotonic()
    assert wait_for(lambda: status(store, rid) == "failed", timeout=15)
    assert time.monotonic() - killed_at < 15
    run = store.get_run(rid)
    assert "killed" in run["error"]
    kept = store.metrics([rid], ["loss"])
    assert len(kept) >= 3 and kept["step"].tolist() == list(range(1, len(kept) + 1))
    duckdb.connect(str(data_dir / "lab.duckdb"), read_only=True).close()


def test_kill_9_of_the_worker_alone_is_reported_by_the_supervisor(data_dir):
    store = Store(data_dir).init()
    rid = submit(tiny_config(max_steps=2000), data_dir)
    assert wait_for(lambda: (store.get_run(rid) or {}).get("worker_pid") and
                    len(store.metrics([rid], ["loss"])) >= 2, timeout=120)
    os.kill(int(store.get_run(rid)["worker_pid"]), signal.SIGKILL)
    assert wait_for(lambda: status(store, rid) == "failed", timeout=15)
    assert "SIGKILL" in store.get_run(rid)["error"]


def test_cancel_stops_the_job_and_resume_finishes_it(data_dir):
    store = Store(data_dir).init()
    rid = submit(tiny_config(max_steps=60, checkpoint_every=5), data_dir)
    assert wait_for(lambda: int(store.get_run(rid)["step"] or 0) >= 6, timeout=120)
    assert cancel(rid, data_dir)
    assert wait_for(lambda: status(store, rid) == "cancelled", timeout=30)
    pid = int(store.get_run(rid)["pid"])
    assert wait_for(lambda: not _group_alive(pid), timeout=20)
    resume(rid, data_dir)
    assert wait_for(lambda: status(store, rid) == "finished", timeout=180), store.get_run(rid)["error"]
    steps = store.metrics([rid], ["loss"])["step"].tolist()
    assert steps == list(range(1, 61))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/model"], "does not exist"),
    (["--model", "tiny-random", "--corpus", "/no/such/file.txt"], "does not exist"),
    (["--model", "tiny-random", "--max-steps", "0"], "max_steps must be at least 1"),
    (["--model", "tiny-random", "--lr", "-1"], "must be positive"),
    (["--model", "tiny-random", "--objective", "nope"], "Unknown objective"),
    (["--model", "tiny-random", "--param", "oops"], "KEY=VALUE"),
])
def test_cli_bad_input_exits_nonzero_with_a_clear_message(data_dir, args, message):
    r = lab_cli("train", *args, data_dir=data_dir, timeout=120)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert Store(data_dir).list_runs().empty          # nothing half-written


def test_cli_broken_corpus_file(data_dir, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    r = lab_cli("train", "--model", "tiny-random", "--corpus", str(bad), data_dir=data_dir, timeout=120)
    assert r.returncode == 2 and "broken.jsonl, line 2: not valid JSON" in r.stderr


def test_cli_unknown_run_id(data_dir):
    for cmd in ("show", "cancel", "resume"):
        r = lab_cli(cmd, "nope-123", data_dir=data_dir)
        assert r.returncode == 2 and "No run with id 'nope-123'" in r.stderr
