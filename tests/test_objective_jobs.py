"""Each reasoning objective as a real background job on tiny-random: it finishes and fills
the thought/rollout tables; RPT's next-token reasoning accuracy runs on its checkpoint."""

import pytest
from conftest import app_page

from jobs.manager import reap, submit, submit_nt_reasoning
from lab.config import RunConfig
from lab.mathgen import documents
from lab.nt_reasoning import evaluate_nt_reasoning, write_nt_reasoning
from lab.store import Store, wait_for

SMALL = {
    "quiet-star": dict(n_ahead=4, n_ahead_talk=2, n_passes=2),
    "rlp": dict(group_size=2, max_thought_tokens=4),
    "rpt": dict(group_size=2, max_new_tokens=6, warmup_steps_format=1, entropy_threshold=0.0),
}


def run_job(objective: str, data_dir) -> tuple[Store, str]:
    cfg = RunConfig.from_dict(dict(objective=objective, model="tiny-random", corpus="builtin",
                                   corpus_docs=40, seq_len=32, batch_size=2, max_steps=3, lr=1e-3,
                                   sample_every=1, n_samples=1, checkpoint_every=0,
                                   params=SMALL[objective]))
    store = Store(data_dir).init()
    rid = submit(cfg, data_dir)

    def done() -> bool:
        reap(data_dir)
        return store.get_run(rid)["status"] not in ("queued", "running")
    assert wait_for(done, timeout=240)
    run = store.get_run(rid)
    assert run["status"] == "finished", run["error"]
    return store, rid


@pytest.mark.parametrize("objective,kind", [("quiet-star", "quiet-star"), ("rlp", "rlp"), ("rpt", "rpt")])
def test_objective_job_fills_thought_tables(data_dir, objective, kind, monkeypatch):
    store, rid = run_job(objective, data_dir)
    th = store.thoughts(rid)
    assert not th.empty and set(th["kind"]) == {kind}
    assert th["reward"].notna().all()
    assert sorted(th["step"].unique()) == [1, 2, 3]
    names = set(store.metric_names([rid]))
    assert {"loss", "reward/mean", "thought/length"} <= names
    if objective == "quiet-star":
        assert {"mix/w_mean", "loss/base_nll", "loss/mixed_nll", "loss/policy", "reward/std"} <= names
        assert th["weight"].notna().all()
        assert (th["n_tokens"] == SMALL["quiet-star"]["n_ahead"] - 3).all()   # start, sampled…, end
        assert (data_dir / "runs" / rid / "checkpoints").exists()
    if objective == "rlp":
        assert {"rlp/gain_vs_init", "rlp/nll_no_thought", "rlp/nll_thought", "rlp/top1_thought",
                "rl/clip_frac", "rl/adv_std"} <= names
        assert th.groupby(["step", "sample", "position"]).size().eq(2).all()    # G thoughts each
    if objective == "rpt":
        assert {"rpt/format_fail", "rpt/dropped_groups"} <= names
        # Next-token reasoning accuracy on the trained checkpoint, stored in DuckDB.
        result = evaluate_nt_reasoning(f"run:{rid}", "tiny-random", documents(6, seed=99),
                                       n_positions=4, data_dir=data_dir, max_new_tokens=8)
        ids = write_nt_reasoning(store, result)
        ev = store.query("SELECT benchmark, mode, n_items FROM evals WHERE run_id = ?", [rid])
        assert len(ev) == len(ids) and set(ev["benchmark"]) == {"nt-reasoning"}
        assert any(m.startswith("reasoning/") for m in ev["mode"])
        items = store.query("SELECT count(*) AS n FROM eval_items WHERE eval_id IN (SELECT id FROM evals WHERE run_id = ?)", [rid])
        assert items["n"].iloc[0] > 0
        # The same evaluation as a background job, base model beside the trained one.
        jobs = [submit_nt_reasoning(m, data_dir, reference="tiny-random", n_positions=2, n_docs=4,
                                    max_new_tokens=6) for m in (f"run:{rid}", "tiny-random")]
        assert wait_for(lambda: all(store.get_run(j)["status"] not in ("queued", "running") for j in jobs)
                        or bool(reap(data_dir)), timeout=240)
        assert [store.get_run(j)["status"] for j in jobs] == ["finished", "finished"], \
            [store.get_run(j)["error"] for j in jobs]
        models = set(store.query("SELECT model FROM evals WHERE benchmark = 'nt-reasoning'")["model"])
        assert {f"run:{rid}", "tiny-random"} <= {m.partition("@")[0] for m in models}
        # …and the page shows base vs trained bars.
        at = app_page("pages/nt_accuracy.py", data_dir, monkeypatch)
        assert not at.exception
        assert len(at.get("plotly_chart")) == 1
