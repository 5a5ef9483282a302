import json
import multiprocessing as mp

import duckdb
import pytest

from lab.errors import LabError
from lab.store import Store, now


def test_runs_metrics_tokens_thoughts_roundtrip(data_dir):
    s = Store(data_dir).init()
    rid = s.create_run(config={"objective": "ntp", "name": "a", "max_steps": 5, "model": "m"})
    s.append({"metrics": [{"run_id": rid, "step": 1, "name": "loss", "value": 2.5, "wall_time": 0.1, "flops": 10.0}],
              "tokens": [{"run_id": rid, "step": 1, "sample": 0, "position": 0, "token_id": 5, "token": "hi",
                          "entropy": 1.0, "nll": 2.0, "prob": 0.1, "forking": True, "extra": {"w": 0.5}}],
              "thoughts": [{"run_id": rid, "step": 1, "sample": 0, "position": 0, "idx": 0, "kind": "rlp",
                            "text": "think", "reward": 0.3}]},
             run_update={"step": 1, "status": "running"}, run_id=rid)
    run = s.get_run(rid)
    assert run["status"] == "running" and run["step"] == 1 and run["name"] == "a"
    assert run["versions"] and "torch" in run["versions"]
    assert s.metrics([rid])["value"].tolist() == [2.5]
    assert s.tokens(rid, 1, 0)["extra"].tolist() == ['{"w": 0.5}']
    assert s.thoughts(rid)["text"].tolist() == ["think"]
    assert s.set_status_if(rid, ["running"], status="finished")
    assert not s.set_status_if(rid, ["running"], status="failed")
    s.delete_run(rid)
    assert s.get_run(rid) is None and s.metrics([rid]).empty


def test_sql_parameters_are_not_interpreted(data_dir):
    s = Store(data_dir).init()
    evil = "x'); DROP TABLE runs; --"
    rid = s.create_run(config={"objective": "ntp", "name": evil})
    assert s.get_run(rid)["name"] == evil
    assert s.get_run(evil) is None
    with pytest.raises(LabError, match="No run with id"):
        s.require_run(evil)


def test_not_a_duckdb_file_gives_clear_error(data_dir):
    (data_dir / "lab.duckdb").write_bytes(b"this is not a database" * 100)
    with pytest.raises(LabError, match="not a readable DuckDB database"):
        Store(data_dir).init()


def _writer(path: str, run_id: str, n: int) -> None:
    s = Store(path)
    for i in range(n):
        s.append({"metrics": [{"run_id": run_id, "step": i, "name": "loss", "value": float(i),
                               "wall_time": 0.0, "flops": 0.0}]}, run_update={"step": i}, run_id=run_id)


def test_two_writer_processes_and_a_polling_reader(data_dir):
    """Two processes write while this one polls: no lock error, no lost row."""
    s = Store(data_dir).init()
    ids = [s.create_run(config={"objective": "ntp"}) for _ in range(2)]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(data_dir), rid, 60)) for rid in ids]
    for p in procs:
        p.start()
    reads = 0
    while any(p.is_alive() for p in procs):
        s.metrics(ids)
        s.list_runs()
        reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    counts = s.query("SELECT run_id, count(*) AS n FROM metrics GROUP BY run_id")
    assert sorted(counts["n"].tolist()) == [60, 60]
    assert reads > 5


def test_database_readable_by_duckdb_after_writes(data_dir):
    s = Store(data_dir).init()
    rid = s.create_run(config={"objective": "ntp"})
    con = duckdb.connect(str(data_dir / "lab.duckdb"), read_only=True)
    assert con.execute("SELECT id FROM runs").fetchall() == [(rid,)]
    con.close()


def test_a_stopping_job_flushes_whole_steps_only(data_dir):
    """What a cancelled or crashing job keeps: every step whose metrics it logged, and no
    records of the step it was inside when it stopped."""
    from lab.runlog import RunLogger
    s = Store(data_dir).init()
    rid = s.create_run(config={"objective": "ntp"})
    log = RunLogger(s, rid, flush_every=1e9)
    token = {"sample": 0, "position": 0, "token_id": 1, "token": "a", "entropy": 0.5}
    for step in (1, 2):
        log.records("tokens", step, [token])
        log.metrics(step, {"loss": 1.0 / step}, wall_time=0.0, flops=0.0)
    log.records("tokens", 3, [token])              # stopped inside step 3, before its metrics
    log.flush_quietly()
    assert s.metrics([rid])["step"].tolist() == [1, 2]
    assert sorted(s.tokens(rid)["step"].unique()) == [1, 2]
    assert s.get_run(rid)["step"] == 2


def test_a_cancel_during_a_flush_waits_for_the_commit(data_dir):
    """SIGTERM (cancel) arriving mid-commit is held until the rows are written and the buffer
    emptied, so the stopping job's final flush cannot write them twice."""
    import os
    import signal

    from lab.runlog import RunLogger

    class Stop(Exception):
        pass

    def raise_stop(signum, frame):
        raise Stop()

    s = Store(data_dir).init()
    rid = s.create_run(config={"objective": "ntp"})
    log = RunLogger(s, rid, flush_every=1e9)
    log.metrics(1, {"loss": 1.0}, wall_time=0.0, flops=0.0)
    real_append = s.append

    def append_with_a_cancel(*args, **kw):
        os.kill(os.getpid(), signal.SIGTERM)          # arrives in the middle of the commit
        real_append(*args, **kw)

    s.append = append_with_a_cancel
    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        with pytest.raises(Stop):
            log.flush()
        assert log.rows["metrics"] == []               # written, then raised
        s.append = real_append
        log.flush_quietly()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert s.metrics([rid])["step"].tolist() == [1]    # once


def test_a_database_from_before_the_phase_column_is_upgraded(data_dir):
    con = duckdb.connect(str(data_dir / "lab.duckdb"))
    con.execute("CREATE TABLE runs (id VARCHAR PRIMARY KEY, name VARCHAR, objective VARCHAR, "
                "kind VARCHAR DEFAULT 'train', status VARCHAR, model VARCHAR, corpus VARCHAR, "
                "config VARCHAR, created_at TIMESTAMP, started_at TIMESTAMP, finished_at TIMESTAMP, "
                "heartbeat_at TIMESTAMP, step INTEGER DEFAULT 0, max_steps INTEGER, error VARCHAR, "
                "git_commit VARCHAR, versions VARCHAR, command VARCHAR, pid INTEGER, worker_pid INTEGER, "
                "device VARCHAR, log_path VARCHAR, tags VARCHAR DEFAULT '', notes VARCHAR DEFAULT '', "
                "experiment VARCHAR DEFAULT '', attempts INTEGER DEFAULT 0)")
    con.execute("INSERT INTO runs (id, status) VALUES ('old', 'finished')")
    con.close()
    s = Store(data_dir)
    s.update_run("old", phase="loading")
    assert s.get_run("old")["phase"] == "loading" and s.get_run("old")["status"] == "finished"


def test_lab_code_reads_only_through_named_queries():
    """Pages, jobs and lab modules hold no SQL reads: SELECTs live in lab/store.py and
    lab/queries.py only, and nobody else calls Store.query()."""
    from conftest import ROOT
    layer = {ROOT / "lab" / "store.py", ROOT / "lab" / "queries.py"}
    sources = [p for d in ("lab", "jobs", "pages") for p in (ROOT / d).rglob("*.py")] + [ROOT / "app.py"]
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in sources if p not in layer
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if "SELECT " in line or ".query(" in line]
    assert offenders == []


def test_reads_never_write(data_dir):
    s = Store(data_dir)                                # a writable folder: its database is made here
    rid = s.create_run(config={"objective": "ntp", "model": "m"})

    def no_write():
        raise AssertionError("a read opened a write session")
    s.write = no_write
    assert s.get_run(rid)["objective"] == "ntp"
    assert s.list_runs()["id"].tolist() == [rid] and s.metrics([rid]).empty
    fresh = data_dir / "fresh"
    fresh.mkdir()
    t = Store(fresh)
    t.write = no_write
    assert t.list_runs().empty


def test_every_run_update_rejects_unknown_fields(data_dir):
    s = Store(data_dir)
    rid = s.create_run(config={"objective": "ntp"})
    for update in (lambda: s.update_run(rid, stauts="finished"),
                   lambda: s.set_status_if(rid, ["queued"], stauts="finished"),
                   lambda: s.append({}, run_update={"stauts": "finished"}, run_id=rid)):
        with pytest.raises(ValueError, match="stauts"):
            update()
    assert s.get_run(rid)["status"] == "queued"


def test_save_evals_replaces_a_retried_eval(data_dir):
    s = Store(data_dir)

    def save(score, items):
        s.save_evals([{"id": "e1", "run_id": None, "model": "m", "benchmark": "csqa", "mode": "loglik",
                       "n_items": len(items), "score": score, "stderr": None, "created_at": now(),
                       "config": {"metric": "acc"}}],
                     [{"eval_id": "e1", "item_id": i, "correct": c, "prediction": "", "target": "",
                       "extra": {}} for i, c in items])
    save(0.5, [("a", 1.0), ("b", 0.0)])
    save(1.0, [("a", 1.0)])
    ev = s.query("SELECT id, score, config FROM evals")
    assert ev["score"].tolist() == [1.0] and json.loads(ev["config"][0]) == {"metric": "acc"}
    assert s.query("SELECT item_id FROM eval_items")["item_id"].tolist() == ["a"]
