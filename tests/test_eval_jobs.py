"""Evaluations as background jobs, queued behind the training run they evaluate."""
import json

import pytest

from jobs.manager import cancel, reap, submit, submit_eval, submit_nt_reasoning
from lab.config import RunConfig
from lab.errors import LabError
from lab.evaluation import EvalSpec
from lab.store import Store, wait_for


def _ended(store, rid):
    reap(store.data_dir)
    return store.get_run(rid)["status"] not in ("queued", "running")


def test_eval_job_waits_for_training_then_scores_its_checkpoint(data_dir, monkeypatch):
    monkeypatch.setenv("THOUGHTLAB_CPU_JOBS", "2")
    store = Store(data_dir).init()
    train_id = submit(RunConfig.from_dict(dict(objective="ntp", model="tiny-random", corpus_docs=40,
                                               seq_len=32, batch_size=2, max_steps=3, checkpoint_every=0)),
                      data_dir)
    # No `after` given: an eval of a run still training waits for it by itself.
    ev = submit_eval(EvalSpec(model=f"run:{train_id}", benchmark="math-test", limit=4, max_new_tokens=8),
                     data_dir, experiment="exp1")
    assert json.loads(store.get_run(ev)["config"])["after"] == [train_id]
    assert wait_for(lambda: _ended(store, ev), timeout=300)
    run, trained = store.get_run(ev), store.get_run(train_id)
    assert run["status"] == "finished", run["error"]
    assert run["started_at"] >= trained["finished_at"]          # it waited for training
    row = store.query("SELECT run_id, benchmark, n_items FROM evals WHERE id = ?", [ev])
    assert row.to_dict("records") == [{"run_id": train_id, "benchmark": "math-test", "n_items": 4}]
    assert run["kind"] == "eval" and run["experiment"] == "exp1" and run["step"] == 100


def test_eval_behind_a_cancelled_run_is_cancelled_with_the_reason(data_dir):
    store = Store(data_dir).init()
    train_id = submit(RunConfig.from_dict(dict(objective="ntp", model="tiny-random", corpus_docs=40,
                                               seq_len=32, batch_size=2, max_steps=500)), data_dir)
    ev = submit_eval(EvalSpec(model=f"run:{train_id}", benchmark="math-test", limit=2), data_dir,
                     after=[train_id])
    cancel(train_id, data_dir)
    assert wait_for(lambda: _ended(store, ev), timeout=60)
    run = store.get_run(ev)
    assert run["status"] == "cancelled" and train_id in run["error"]


def test_evals_of_unknown_runs_or_an_invalid_reference_are_refused_at_once(data_dir):
    store = Store(data_dir).init()
    with pytest.raises(LabError, match="No run with id 'nope'"):
        submit_eval(EvalSpec(model="run:nope", benchmark="math-test", limit=2), data_dir)
    rid = store.create_run(config={"objective": "ntp"}, status="finished")
    with pytest.raises(LabError, match="reference model must be fixed"):
        submit_nt_reasoning(f"run:{rid}", data_dir)          # reference defaults to the model
    assert store.list_runs(kind="eval").empty                # nothing half-queued
