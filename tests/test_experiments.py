"""Experiments: every objective on one model, corpus and FLOP budget, evaluated on the same
items; deltas against the base model and NTP through lab.evaluation.compare."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from jobs.manager import reap
from lab import experiments as ex
from lab.errors import LabError
from lab.checkpoint import list_checkpoints
from lab.config import RunConfig
from lab.evaluation import compare
from lab.flops import train_flops
from lab.models import describe, load_model
from lab.store import Store, wait_for

CSQA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "commonsenseqa_dev.jsonl"
TINY_CFG = dict(seq_len=32, batch_size=2, corpus_docs=40, lr=1e-3, sample_every=1, n_samples=1,
                checkpoint_every=0)
TINY_QS = {"quiet-star": dict(n_ahead=4, n_ahead_talk=2)}


def test_tiny_experiment_trains_at_one_flop_budget_then_evaluates(data_dir, monkeypatch):
    monkeypatch.setenv("THOUGHTLAB_CPU_JOBS", "2")
    store = Store(data_dir).init()
    exp = ex.launch_experiment(
        "tiny-random", "builtin", objectives=("ntp", "quiet-star"), budget_steps=2,
        benchmarks=["math-test", "csqa"], data={"csqa": str(CSQA)}, limit=4, max_new_tokens=8,
        base_cfg=TINY_CFG, params=TINY_QS, thought_modes=(), data_dir=data_dir)
    jobs = ex.experiment_runs(store, exp)
    train = jobs[jobs["kind"] == "train"]
    assert sorted(train["objective"]) == ["ntp", "quiet-star"]
    # training, their evals, the base model's evals, NTP at Quiet-STaR's step count
    assert len(jobs) == 2 + 2 * 2 + 2 + 2
    cfgs = {c["objective"]: c for c in (json.loads(store.get_run(r)["config"]) for r in train["id"])}
    assert cfgs["ntp"]["max_flops"] == cfgs["quiet-star"]["max_flops"] > 0
    assert all(c["max_steps"] >= 2 * ex.STEP_HEADROOM for c in cfgs.values())   # FLOPs end the run
    qs_id = train.set_index("objective").loc["quiet-star", "id"]
    assert cfgs["ntp"]["after"] == cfgs["ntp"]["checkpoint_steps_of"] == [qs_id]

    def ended() -> bool:
        reap(data_dir)
        return not ex.experiment_runs(store, exp)["status"].isin(["queued", "running"]).any()
    assert wait_for(ended, timeout=420, interval=2)
    jobs = ex.experiment_runs(store, exp)
    assert (jobs["status"] == "finished").all(), jobs[["name", "status", "error"]].to_string()
    for r in jobs[jobs["kind"] == "eval"].to_dict("records"):     # evals of a run wait for it
        spec = json.loads(store.get_run(r["id"])["config"])
        if spec.get("after"):
            assert r["started_at"] >= store.get_run(spec["after"][0])["finished_at"]

    ntp_id = train.set_index("objective").loc["ntp", "id"]
    assert store.get_run(ntp_id)["started_at"] >= store.get_run(qs_id)["finished_at"]
    qs_steps = int(store.get_run(qs_id)["step"])
    assert [s for s, _ in list_checkpoints(data_dir, ntp_id)] == [qs_steps, 2]   # kept for matching
    compute = ex.compute_table(store, exp).set_index("objective")
    assert compute.loc["ntp", "steps"] == 2                        # exactly the budget steps
    assert (compute["flops"] >= compute["budget_flops"]).all()
    assert compute.loc["ntp", "budget_share"] == pytest.approx(1.0)

    res = ex.experiment_results(store, exp)
    assert len(res) == 8 and set(res["benchmark"]) == {"math-test", "csqa"}
    assert set(res["objective"]) == {"base", "ntp", "quiet-star"}
    assert set(res["label"]) == {"base", "ntp", "quiet-star", f"ntp@{qs_steps}"}
    assert res["score"].map(math.isfinite).all() and (res["n"] == 4).all()
    trained = res[res["objective"] != "base"]
    assert (trained["flops"] > 0).all() and (trained["steps"] >= 1).all()
    for against, n in (("base", 6), ("ntp", 4)):
        d = ex.deltas(store, exp, against, res)
        assert len(d) == n and d["reference"].str.startswith(against).all()
        for col in ("delta", "ci_low", "ci_high", "p_mcnemar"):
            assert d[col].map(math.isfinite).all(), (against, col)
    vs_ntp = ex.deltas(store, exp, "ntp", res)
    assert sorted(vs_ntp["matched"]) == ["FLOPs", "FLOPs", "steps", "steps"]
    by_steps = vs_ntp[vs_ntp["matched"] == "steps"]
    assert (by_steps["reference"] == f"ntp@{qs_steps}").all() and (by_steps["steps_ref"] == qs_steps).all()


def test_plan_budget_is_ntp_steps_of_the_same_shape_and_evals_cover_the_controls(data_dir):
    gsm8k = CSQA.parent / "gsm8k_test.jsonl"
    plan = ex.plan_experiment("tiny-random", objectives=("ntp", "quiet-star", "rlp"), budget_steps=3,
                              benchmarks=["math-test", "csqa"], data={"csqa": CSQA, "gsm8k": gsm8k},
                              limit=5, base_cfg=TINY_CFG, params=TINY_QS, data_dir=data_dir)
    desc = describe(load_model("tiny-random").model)
    step = train_flops(desc, TINY_CFG["batch_size"] * TINY_CFG["seq_len"], TINY_CFG["seq_len"])
    assert plan.budget_flops == pytest.approx(3 * step, rel=1e-6) and plan.budget_flops <= 3 * step
    assert {c.max_flops for c in plan.configs.values()} == {plan.budget_flops}
    assert {c.experiment for c in plan.configs.values()} == {plan.id}
    assert list(plan.configs)[-1] == "ntp"            # trained last, at the others' step counts
    assert sorted((obj, s.benchmark) for s, obj in plan.matched_evals) == sorted(
        (o, b) for o in ("quiet-star", "rlp") for b in ("math-test", "csqa"))
    got = sorted((obj or "base", s.benchmark, s.thought_mode) for s, obj in plan.evals)
    want = sorted([(o, b, "none") for o in ("ntp", "quiet-star", "rlp") for b in ("math-test", "csqa")]
                  + [("quiet-star", b, m) for b in ("math-test", "csqa") for m in ("thoughts", "corrupted")]
                  + [("base", b, "none") for b in ("math-test", "csqa", "gsm8k", "gsm8k-cot")])
    assert got == want
    assert all(s.limit == 5 for s, _ in plan.evals)
    assert Store(data_dir).list_runs(kind=None).empty                  # planning starts nothing

    steps = ex.plan_experiment("tiny-random", objectives=("ntp", "rpt"), budget_steps=4,
                               budget_mode="steps", base_cfg=TINY_CFG, data_dir=data_dir)
    assert {(c.max_steps, c.max_flops) for c in steps.configs.values()} == {(4, 0.0)}
    assert steps.matched_evals == []                 # every run already does the same steps


@pytest.mark.parametrize("kwargs, message", [
    (dict(benchmarks=["csqa"]), "needs a csqa data file"),
    (dict(benchmarks=["no-such"]), "Unknown or no benchmark"),
    (dict(budget_mode="tokens"), "budget_mode"),
    (dict(objectives=()), "at least one objective"),
    (dict(objectives=("ntp", "nope")), "Unknown objective"),
    (dict(benchmarks=["csqa"], data={"csqa": "/no/such.jsonl"}), "such.jsonl"),
])
def test_bad_experiments_are_rejected_before_any_job(data_dir, kwargs, message):
    with pytest.raises(LabError, match=message):
        ex.launch_experiment("tiny-random", data_dir=data_dir, **{"base_cfg": TINY_CFG, **kwargs})
    assert Store(data_dir).list_runs(kind=None).empty


# ---- deltas on hand-made rows -------------------------------------------------------------------
def _eval(store: Store, exp: str, eval_id: str, run_id: str | None, model: str, benchmark: str,
          correct: np.ndarray, thought_mode: str = "none") -> None:
    """An eval job row, its evals row and its items, as an eval job would leave them."""
    store.create_run(run_id=eval_id, kind="eval", status="finished",
                     config={"experiment": exp, "objective": "eval", "model": model})
    items = [{"eval_id": eval_id, "item_id": f"test-{i}", "correct": float(c), "prediction": str(int(c)),
              "target": "1", "extra": json.dumps({"generation": f"out {i}"})} for i, c in enumerate(correct)]
    store.append({"eval_items": items})
    cfg = {"spec": {"thought_mode": thought_mode, "data": None, "limit": len(correct)}}
    with store.write() as con:
        con.execute("INSERT INTO evals (id, run_id, model, benchmark, mode, n_items, score, stderr, "
                    "created_at, config) VALUES (?, ?, ?, ?, 'gen', ?, ?, 0.1, now(), ?)",
                    [eval_id, run_id, model, benchmark, len(correct), float(np.mean(correct)),
                     json.dumps(cfg)])


@pytest.fixture
def hand_made(data_dir):
    store = Store(data_dir).init()
    rng = np.random.default_rng(3)
    runs = {}
    for obj, flops in (("ntp", 1e9), ("quiet-star", 1.4e9)):
        runs[obj] = store.create_run(config={"objective": obj, "model": "m", "experiment": "e1",
                                             "max_flops": 1e9})
        store.append({"metrics": [{"run_id": runs[obj], "step": s, "name": "loss", "value": 1.0,
                                   "flops": flops * s / 2} for s in (1, 2)]})
    scores = {k: (rng.random(40) < p).astype(float) for k, p in
              [("base", 0.3), ("ntp", 0.4), ("qs", 0.6), ("qs_t", 0.7), ("qs_c", 0.5), ("cot", 0.5),
               ("base_gsm", 0.2)]}
    _eval(store, "e1", "ev-base", None, "m", "math-test", scores["base"])
    _eval(store, "e1", "ev-base-gsm", None, "m", "gsm8k", scores["base_gsm"])
    _eval(store, "e1", "ev-base-cot", None, "m", "gsm8k-cot", scores["cot"])
    _eval(store, "e1", "ev-ntp", runs["ntp"], f"run:{runs['ntp']}", "math-test", scores["ntp"])
    for key, mode in (("qs", "none"), ("qs_t", "thoughts"), ("qs_c", "corrupted")):
        _eval(store, "e1", f"ev-{key}", runs["quiet-star"], f"run:{runs['quiet-star']}", "math-test",
              scores[key], mode)
    _eval(store, "other", "ev-elsewhere", None, "m", "math-test", scores["base"])   # not in e1
    return store, runs


def _same_as_compare(store: Store, row: dict) -> None:
    c = compare(store, row["eval_ref"], row["eval_id"])
    for k in ("delta", "ci_low", "ci_high", "p_mcnemar", "n", "n_right_to_wrong", "n_wrong_to_right"):
        assert row[k] == pytest.approx(c[k]), k


def test_deltas_match_compare_on_hand_made_rows(hand_made):
    store, _ = hand_made
    res = ex.experiment_results(store, "e1")
    assert "ev-elsewhere" not in set(res["eval_id"]) and len(res) == 7
    assert res.set_index("eval_id").loc["ev-qs_t", "label"] == "quiet-star +thoughts"
    assert res.set_index("eval_id").loc["ev-ntp", ["steps", "flops"]].tolist() == [2, 1e9]

    base = ex.deltas(store, "e1", "base")
    pairs = set(zip(base["eval_ref"], base["eval_id"]))
    assert pairs == {("ev-base", e) for e in ("ev-ntp", "ev-qs", "ev-qs_t", "ev-qs_c")} | \
        {("ev-base-gsm", "ev-base-cot")}                   # the CoT control on the base model
    ntp = ex.deltas(store, "e1", "ntp")
    assert set(zip(ntp["eval_ref"], ntp["eval_id"])) == {("ev-ntp", e) for e in ("ev-qs", "ev-qs_t", "ev-qs_c")}
    assert (ntp["matched"] == "FLOPs").all()
    thought = ex.thought_deltas(store, "e1")
    assert set(zip(thought["eval_ref"], thought["eval_id"])) == {
        ("ev-qs", "ev-qs_t"), ("ev-qs", "ev-qs_c"), ("ev-qs_t", "ev-qs_c")}
    for row in [*base.to_dict("records"), *ntp.to_dict("records"), *thought.to_dict("records")]:
        _same_as_compare(store, row)


def test_flipped_items_list_compares_flips_with_outputs(hand_made):
    store, _ = hand_made
    c = compare(store, "ev-ntp", "ev-qs")
    items = ex.flipped_items(store, "ev-ntp", "ev-qs")
    assert sorted(items[items["direction"] == "right→wrong"]["item_id"]) == sorted(c["right_to_wrong"])
    assert sorted(items[items["direction"] == "wrong→right"]["item_id"]) == sorted(c["wrong_to_right"])
    assert items["output"].str.startswith("out ").all()
    # Built-in problems: the exact prompt is rebuilt from the spec.
    assert items["prompt"].str.startswith("Problem: ").all()


def test_deltas_at_matched_steps_use_ntps_checkpoint_of_the_same_step_count(hand_made):
    store, runs = hand_made
    rng = np.random.default_rng(5)
    _eval(store, "e1", "ev-ntp-at2", runs["ntp"], f"run:{runs['ntp']}@2", "math-test",
          (rng.random(40) < 0.45).astype(float))
    ntp = ex.deltas(store, "e1", "ntp")
    pairs = {(r["eval_ref"], r["eval_id"]): r["matched"] for r in ntp.to_dict("records")}
    assert pairs == {**{("ev-ntp", e): "FLOPs" for e in ("ev-qs", "ev-qs_t", "ev-qs_c")},
                     **{("ev-ntp-at2", e): "steps" for e in ("ev-qs", "ev-qs_t", "ev-qs_c")}}
    assert set(ntp[ntp["matched"] == "steps"]["reference"]) == {"ntp@2"}
    for row in ntp.to_dict("records"):
        _same_as_compare(store, row)


def test_checkpoints_at_other_runs_step_counts_are_kept(data_dir):
    from conftest import tiny_config

    from lab.train import train
    store = Store(data_dir).init()
    other = store.create_run(config={"objective": "rlp"}, status="finished")
    store.update_run(other, step=3)
    cfg = tiny_config(max_steps=8, checkpoint_every=1, after=[other],
                      checkpoint_steps_of=[other]).validate()
    rid = store.create_run(config=cfg.to_dict(), status="running")
    train(cfg, rid, store)
    assert [s for s, _ in list_checkpoints(data_dir, rid)] == [3, 7, 8]   # newest two + step 3
    # Resumed for two more steps after the matched run was deleted: step 3 is still kept.
    store.delete_run(other)
    train(dataclasses.replace(cfg, max_steps=10), rid, store)
    assert [s for s, _ in list_checkpoints(data_dir, rid)] == [3, 9, 10]


def test_matched_step_specs_are_pinned_or_explained(data_dir):
    from lab.checkpoint import checkpoint_dir_for
    from lab.models import pin_steps_of
    store = Store(data_dir).init()
    ntp = store.create_run(config={"objective": "ntp"}, status="finished")
    other = store.create_run(config={"objective": "rlp"}, status="running")
    spec = f"run:{ntp}@steps-of:{other}"
    with pytest.raises(LabError, match="has not finished"):
        pin_steps_of(spec, data_dir)
    store.update_run(other, status="finished", step=3)
    with pytest.raises(LabError, match="kept no checkpoint at that step"):
        pin_steps_of(spec, data_dir)
    folder = checkpoint_dir_for(data_dir, ntp, 3)
    folder.mkdir(parents=True)
    (folder / "COMPLETE").write_text("3")
    assert pin_steps_of(spec, data_dir) == f"run:{ntp}@3"
    assert pin_steps_of(f"run:{ntp}@2", data_dir) == f"run:{ntp}@2"      # others unchanged


def test_dependencies_repeated_or_deleted(data_dir):
    from jobs.supervisor import wait_for_dependencies
    store = Store(data_dir).init()
    done = store.create_run(config={"objective": "rlp"}, status="finished")
    waiting = store.create_run(config={"objective": "ntp"})
    assert wait_for_dependencies(store, waiting, [done, done], require_finished=False)
    ev = store.create_run(config={"objective": "eval"}, kind="eval")
    assert not wait_for_dependencies(store, ev, ["gone-run"])
    run = store.get_run(ev)
    assert run["status"] == "cancelled" and "gone-run" in run["error"] and "deleted" in run["error"]


def test_checkpoint_steps_of_needs_after_and_known_runs(data_dir):
    from jobs.manager import validate
    with pytest.raises(LabError, match="must also be listed in after"):
        RunConfig(model="tiny-random", checkpoint_steps_of=["x"]).validate()
    Store(data_dir).init()
    with pytest.raises(LabError, match="unknown run id"):
        validate(RunConfig(model="tiny-random", after=["nope"]), data_dir)
    assert RunConfig.from_dict({"after": "a, b"}).after == ["a", "b"]      # CLI / form text
