"""Experiments: specs and their checks, the plan (pretrain, then branch; seeds; matched steps),
branching from the pretrained base, the driver, the experiment CLI end to end through the
real job system, and the seed-pooled comparisons on hand-made rows."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import lab_cli, tiny_config

from lab import experiments as ex
from lab.checkpoint import list_checkpoints
from lab.config import RunConfig
from lab.errors import LabError
from lab.evaluation import compare, stats
from lab.experiments import progress as xp
from lab.experiments.summary import SummaryContext, fmt_delta, summary
from lab.flops import train_flops
from lab.models import describe, load_model
from lab.store import Store, now

CSQA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "commonsenseqa_dev.jsonl"
TINY_TRAINING = dict(seq_len=32, batch_size=2, corpus_docs=40, lr=1e-3, sample_every=1, n_samples=1,
                     checkpoint_every=0)
QS = {"n_ahead": 4, "n_ahead_talk": 2}


def tiny_spec(**over) -> dict:
    spec = {"title": "tiny", "model": "tiny-random", "training": dict(TINY_TRAINING),
            "pretrain": {"steps": 2}, "branch": {"budget_steps": 2},
            "arms": [{"id": "ntp", "objective": "ntp"},
                     {"id": "quiet-star", "objective": "quiet-star", "params": dict(QS)}],
            "seeds": 2, "evaluation": {"benchmarks": ["math-test", "heldout-nll"], "limit": 4,
                                       "max_new_tokens": 8}}
    return {**spec, **over}


# ---- specs ---------------------------------------------------------------------------------------
def test_presets_are_valid_specs_with_short_ids_and_titles():
    found = ex.presets()
    assert {"quick-cpu", "answer-cpu", "gpu-smollm2", "arms-cpu"} <= set(found)
    for pid in found:
        spec = ex.load_preset(pid).validate()
        assert spec.title and len(spec.arms) >= 2 and spec.reference_arm == "ntp"
    assert ex.load_preset("gpu-smollm2").evaluation.limit >= 1000
    answer = ex.load_preset("answer-cpu")           # calibrated on the mini model (test_mini.py)
    assert answer.model.startswith("mini") and "PROVISIONAL" not in found["answer-cpu"].read_text()


def test_spec_round_trips_through_yaml_with_defaults(tmp_path):
    spec = ex.ExperimentSpec.from_dict({"model": "tiny-random", "arms": [{"id": "ntp", "objective": "ntp"}]})
    assert spec.seeds == [0, 1, 2] and spec.evaluation.limit == 1000       # the defaults
    assert spec.evaluation.benchmarks == ["math-test", "math-longer", "math-format", "heldout-nll"]
    path = tmp_path / "s.yaml"
    path.write_text(spec.to_yaml())
    assert ex.load_spec(path) == spec
    assert ex.ExperimentSpec.from_dict({**tiny_spec(), "seeds": [4, 7]}).seeds == [4, 7]


@pytest.mark.parametrize("change, message", [
    ({"bogus": 1}, r"unknown key\(s\) bogus"),
    ({"arms": [{"id": "ntp", "objective": "ntp", "parms": {}}]}, r"arms\[0\]: unknown key\(s\) parms"),
    ({"seeds": "three"}, "seeds must be a list"),
    ({"evaluation": {"limit": "many"}}, "evaluation.limit must be a whole number"),
    ({"controls": {"cot": "yes"}}, "controls.cot must be true or false"),
    ({"arms": [{"id": "ntp"}]}, r"arms\[0\].objective is missing"),
])
def test_structural_errors_name_the_key(change, message):
    with pytest.raises(LabError, match=message):
        ex.ExperimentSpec.from_dict({**tiny_spec(), **change})


@pytest.mark.parametrize("change, message", [
    ({"arms": [{"id": "a", "objective": "qs"}]}, "Unknown objective 'qs'"),
    ({"arms": [{"id": "a", "objective": "ntp"}, {"id": "a", "objective": "rlp"}]}, "used twice"),
    ({"arms": [{"id": "a", "objective": "ntp", "thought_modes": ["thoughts"]}]}, "need a Quiet-STaR arm"),
    ({"arms": [{"id": "q", "objective": "quiet-star", "params": {"n_ahed": 4}}]}, "n_ahed"),
    ({"training": {"model": "x"}}, "model cannot be set here"),
    ({"training": {"lr": -1}}, "lr .*must be positive"),
    ({"training": {"sequence_length": 9}}, "unknown setting.*sequence_length"),
    ({"evaluation": {"benchmarks": ["csqa"]}}, "needs data"),
    ({"evaluation": {"benchmarks": ["csqa"], "data": {"csqa": "/no/such.jsonl"}}}, "such.jsonl"),
    ({"evaluation": {"benchmarks": ["no-such"]}}, "unknown or none"),
    ({"branch": {"budget_mode": "tokens"}}, "budget_mode"),
    ({"reference": "nope"}, "reference 'nope' is not an arm"),
    ({"model": "tiny-randomm"}, ""),                                  # a hub id: checked by the job
    ({"model": "/no/such/folder"}, "does not exist"),
    ({"seeds": [1, 1]}, "distinct"),
])
def test_bad_specs_are_rejected_before_any_job(data_dir, change, message):
    spec = ex.ExperimentSpec.from_dict({**tiny_spec(), **change})
    if not message:
        assert not spec.problems(data_dir)
        return
    with pytest.raises(LabError, match=message):
        ex.launch(spec, data_dir)
    assert Store(data_dir).list_runs(kind=None).empty
    assert not (data_dir / "experiments").exists()                     # nothing stored either


# ---- the plan ------------------------------------------------------------------------------------
def test_plan_pretrains_once_then_branches_every_arm_and_seed(data_dir):
    gsm8k = CSQA.parent / "gsm8k_test.jsonl"
    spec = ex.ExperimentSpec.from_dict(tiny_spec(
        arms=[{"id": "ntp", "objective": "ntp"}, {"id": "quiet-star", "objective": "quiet-star", "params": QS},
              {"id": "rlp", "objective": "rlp"}],
        evaluation={"benchmarks": ["math-test", "csqa"], "limit": 5,
                    "data": {"csqa": str(CSQA), "gsm8k": str(gsm8k)}}))
    plan = ex.make_plan(spec, "exp-x", data_dir)
    desc = describe(load_model("tiny-random").model)
    step = train_flops(desc, TINY_TRAINING["batch_size"] * TINY_TRAINING["seq_len"], TINY_TRAINING["seq_len"])
    assert plan.budget_flops == pytest.approx(2 * step, rel=1e-6) and plan.budget_flops <= 2 * step
    jobs = {j.key: j for j in plan.jobs}
    pre = jobs["pretrain"]
    assert pre.config.max_steps == 2 and pre.config.max_flops == 0 and pre.config.arm == "base"
    for seed in (0, 1):
        keys = [j.key for j in plan.jobs if j.kind == "train" and j.seed == seed]
        assert keys[-1] == f"train/ntp/s{seed}"                 # the reference last: it reads steps
        for arm in ("ntp", "quiet-star", "rlp"):
            j = jobs[f"train/{arm}/s{seed}"]
            assert j.model_of == "pretrain" and "pretrain" in j.after
            assert (j.config.seed, j.config.arm, j.config.max_flops) == (seed, arm, plan.budget_flops)
        ntp = jobs[f"train/ntp/s{seed}"]
        assert ntp.keep_steps_of == [f"train/quiet-star/s{seed}", f"train/rlp/s{seed}"]   # same seed
        matched = [j for j in plan.jobs if j.steps_of and j.seed == seed]
        assert sorted(j.steps_of for j in matched) == ntp.keep_steps_of
    evals = [j for j in plan.jobs if j.kind == "eval"]
    base = [j for j in evals if j.arm == "base"]
    assert len(base) == 1 and base[0].model_of == "pretrain"                   # once, shared
    assert [s.benchmark for s in base[0].specs] == ["math-test", "csqa", "gsm8k", "gsm8k-cot"]
    qs = [j for j in evals if j.arm == "quiet-star" and not j.steps_of]
    assert sorted(s.thought_mode for j in qs for s in j.specs[:1]) == ["corrupted"] * 2 + ["none"] * 2 + ["thoughts"] * 2
    assert all(s.limit == 5 and s.extra["experiment"] == "exp-x" for j in evals for s in j.specs)
    assert Store(data_dir).list_runs(kind=None).empty                          # planning starts nothing

    # Materialised with run ids: the branch continues from the pretraining's checkpoint.
    ids = {k: f"id-{i}" for i, k in enumerate(jobs)}
    branch = ex.plan.materialise(jobs["train/ntp/s1"], ids)
    assert branch.config.model == f"run:{ids['pretrain']}"
    assert branch.config.checkpoint_steps_of == [ids["train/quiet-star/s1"], ids["train/rlp/s1"]]
    m = ex.plan.materialise(next(j for j in evals if j.steps_of == "train/rlp/s0"), ids)
    assert m.specs[0].model == f"run:{ids['train/ntp/s0']}@steps-of:{ids['train/rlp/s0']}"
    heldout = ex.plan.materialise(jobs["eval/ntp/s0/none"], ids)
    assert all(s.reference == "" for s in heldout.specs if s.benchmark != "heldout-nll")


def test_without_pretraining_a_random_model_has_one_base_per_seed(data_dir):
    spec = ex.ExperimentSpec.from_dict(tiny_spec(pretrain={"steps": 0}, branch={"budget_mode": "steps",
                                                                              "budget_steps": 3}))
    plan = ex.make_plan(spec, "exp-y", data_dir)
    base = [j for j in plan.jobs if j.arm == "base"]
    assert [(j.seed, j.specs[0].seed, j.model_of) for j in base] == [(0, 0, None), (1, 1, None)]
    trains = [j.config for j in plan.jobs if j.kind == "train"]
    assert {(c.max_steps, c.max_flops, c.model) for c in trains} == {(3, 0.0, "tiny-random")}
    assert not any(j.steps_of for j in plan.jobs)        # steps mode: every arm has the same steps
    heldout = [s for j in plan.jobs if j.arm == "ntp" for s in j.specs if s.benchmark == "heldout-nll"]
    assert {s.reference for s in heldout} == {"tiny-random"}   # forking tokens by the base's entropy


# ---- pretrain, then branch -----------------------------------------------------------------------
def test_a_branch_run_starts_from_the_pretrained_checkpoint(data_dir):
    import torch

    from lab.corpora import load_documents, pack
    from lab.train import batch_indices, train
    store = Store(data_dir).init()
    pre_cfg = tiny_config(max_steps=3, lr=1e-2).validate()
    pre = store.create_run(config=pre_cfg.to_dict(), status="running")
    train(pre_cfg, pre, store)
    store.update_run(pre, status="finished", finished_at=now())
    branch_cfg = tiny_config(model=f"run:{pre}", seed=5, max_steps=1, after=[pre]).validate()
    branch = store.create_run(config=branch_cfg.to_dict(), status="running")
    train(branch_cfg, branch, store)
    first_loss = store.query("SELECT value FROM metrics WHERE run_id = ? AND name = 'loss' AND step = 1",
                             [branch])["value"].iloc[0]

    def loss_on_first_batch(model_spec: str) -> float:
        lm = load_model(model_spec, data_dir, seed=branch_cfg.seed)
        docs = load_documents("builtin", n_docs=branch_cfg.corpus_docs, seed=branch_cfg.seed)
        windows = pack(docs, lm.tokenizer, branch_cfg.seq_len)
        ids = windows[batch_indices(len(windows), 0, 0, branch_cfg.batch_size, 1, branch_cfg.seed)]
        with torch.no_grad():
            return float(lm.model(input_ids=ids, labels=ids).loss)
    # The loss of step 1 is computed before the first update: on the pretrained weights.
    assert first_loss == pytest.approx(loss_on_first_batch(f"run:{pre}"), rel=1e-4)
    assert abs(first_loss - loss_on_first_batch("tiny-random")) > 1e-3       # not a fresh init


def test_the_model_check_of_a_branch_waits_for_its_pretraining(data_dir):
    from jobs.manager import validate
    from lab.experiments.driver import _start_if_ready
    store = Store(data_dir).init()
    pre = store.create_run(config={"objective": "ntp"}, status="running")
    cfg = RunConfig.from_dict({**TINY_TRAINING, "model": f"run:{pre}", "after": [pre]})
    assert validate(cfg, data_dir) is cfg                      # no checkpoint yet: checked later
    with pytest.raises(LabError, match="no saved checkpoint"):  # not waiting for it: checked now
        validate(dataclasses.replace(cfg, after=[]), data_dir)
    # The pretraining failed: the driver cancels the branch, saying why.
    branch = store.create_run(config={**cfg.to_dict(), "experiment": "e"})
    store.update_run(pre, status="failed")
    run = store.get_run(branch)
    assert not _start_if_ready(store, {"id": branch, "kind": "train", "config": run["config"]}, {pre: "failed"})
    run = store.get_run(branch)
    assert run["status"] == "cancelled" and pre in run["error"] and "ended as failed" in run["error"]


def test_checkpoints_at_other_runs_step_counts_are_kept(data_dir):
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


# ---- the experiment CLI, end to end through the job system ---------------------------------------
@pytest.mark.timeout(420)
def test_experiment_cli_runs_a_spec_to_the_end_then_status_and_report(tmp_path):
    data = tmp_path / "data"
    spec = tiny_spec(pretrain={"steps": 1}, controls={"thought_modes": False, "matched_steps": False},
                     evaluation={"benchmarks": ["math-test", "heldout-nll"], "limit": 6, "max_new_tokens": 6})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    env = {"THOUGHTLAB_CPU_JOBS": "2"}
    r = lab_cli("experiment", "run", str(path), data_dir=data, timeout=400, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    exp = r.stdout.splitlines()[0].strip()
    assert exp.startswith("exp-") and "10/10 jobs finished" in r.stdout
    assert "ETA" in r.stderr                                # one bar for the whole experiment
    store = Store(data)
    jobs = ex.experiment_runs(store, exp)
    assert (jobs["status"] == "finished").all(), jobs[["name", "status", "error"]].to_string()
    pre = jobs[(jobs["kind"] == "train") & (jobs["arm"] == "base")].iloc[0]
    branches = jobs[(jobs["kind"] == "train") & (jobs["arm"] != "base")]
    assert sorted(zip(branches["arm"], branches["seed"])) == [("ntp", 0), ("ntp", 1), ("quiet-star", 0),
                                                             ("quiet-star", 1)]
    for rid in branches["id"]:
        run = store.get_run(rid)
        assert json.loads(run["config"])["model"] == f"run:{pre['id']}"
        assert run["started_at"] >= store.get_run(pre["id"])["finished_at"]
    assert (data / "experiments" / f"{exp}.yaml").exists()               # the spec is stored

    res = ex.experiment_results(store, exp)
    prim = res[res["primary"]]
    assert set(prim["benchmark"]) == {"math-test", "heldout-nll"} and (prim["n"] == 6).all()
    assert sorted(prim[prim["arm"] == "quiet-star"]["seed"].unique()) == [0, 1]
    assert set(res[~res["primary"]]["metric"]) == {"answer_nll", "solution_nll", "forking_nll"}
    vs = ex.pooled_deltas(store, exp, "reference", res)
    assert (vs["n_seeds"] == 2).all() and set(vs["arm"]) == {"quiet-star"}

    status = lab_cli("experiment", "status", exp, data_dir=data, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "ended: 100% done" in status.stdout and "Quiet-STaR vs NTP" in status.stdout
    out = tmp_path / "report.html"
    rep = lab_cli("experiment", "report", exp, "--out", str(out), data_dir=data, timeout=120)
    assert rep.returncode == 0, rep.stderr
    doc = out.read_text("utf-8")
    assert "The answer" in doc and "min–max across seeds" in doc and "Quiet-STaR vs NTP" in doc
    listing = lab_cli("experiment", "list", data_dir=data, timeout=60)
    assert exp in listing.stdout and "tiny" in listing.stdout
    bad = lab_cli("experiment", "status", "exp-nope", data_dir=data, timeout=60)
    assert bad.returncode == 2 and "No experiment" in bad.stderr


def test_cli_rejects_a_bad_spec_file_with_the_reason(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: tiny-random\narms: [{id: a, objective: nope}]\nseeds: 2\n")
    r = lab_cli("experiment", "run", str(path), data_dir=tmp_path / "data", timeout=120)
    assert r.returncode == 2 and "Unknown objective 'nope'" in r.stderr
    r = lab_cli("experiment", "run", str(tmp_path / "missing.yaml"), data_dir=tmp_path / "data", timeout=60)
    assert r.returncode == 2 and "does not exist" in r.stderr


# ---- results and pooled comparisons on hand-made rows -------------------------------------------
def _eval(store: Store, exp: str, eval_id: str, run_id: str | None, model: str, benchmark: str,
          correct: np.ndarray, *, arm: str, seed: int | None, thought_mode: str = "none",
          steps_of: str = "") -> None:
    """An evals row and its items, as an experiment's eval job leaves them."""
    items = [{"eval_id": eval_id, "item_id": f"test-{i}", "correct": float(c), "prediction": str(int(c)),
              "target": "1", "extra": json.dumps({"generation": f"out {i}"})} for i, c in enumerate(correct)]
    store.append({"eval_items": items})
    cfg = {"spec": {"thought_mode": thought_mode, "data": None, "limit": len(correct),
                    "extra": {"experiment": exp, "arm": arm, "seed": seed, "steps_of": steps_of}},
           "metric": "acc"}
    with store.write() as con:
        con.execute("INSERT INTO evals (id, run_id, model, benchmark, mode, n_items, score, stderr, "
                    "created_at, config) VALUES (?, ?, ?, ?, 'gen', ?, ?, 0.1, now(), ?)",
                    [eval_id, run_id, model, benchmark, len(correct), float(np.mean(correct)),
                     json.dumps(cfg)])


@pytest.fixture
def hand_made(data_dir):
    """Two seeds of NTP and Quiet-STaR (with thought modes), a shared base, NTP at
    Quiet-STaR's step count; 40 items of math-test."""
    store = Store(data_dir).init()
    rng = np.random.default_rng(3)
    runs, scores = {}, {}
    for arm, flops in (("ntp", 1e9), ("quiet-star", 1.4e9)):
        for seed in (0, 1):
            rid = store.create_run(config={"objective": arm, "model": "m", "experiment": "e1",
                                           "arm": arm, "seed": seed, "max_flops": 1e9})
            store.append({"metrics": [{"run_id": rid, "step": s, "name": "loss", "value": 1.0,
                                       "flops": flops * s / (2 if arm == "ntp" else 1)}
                                      for s in ((1, 2) if arm == "ntp" else (1,))]})
            runs[arm, seed] = rid
    for key, p in [("base", 0.3), ("ntp0", 0.4), ("ntp1", 0.45), ("qs0", 0.6), ("qs1", 0.55),
                   ("qst0", 0.7), ("qst1", 0.65), ("qsc0", 0.5), ("qsc1", 0.5), ("ntp@0", 0.42),
                   ("ntp@1", 0.4)]:
        scores[key] = (rng.random(40) < p).astype(float)
    _eval(store, "e1", "ev-base", None, "m", "math-test", scores["base"], arm="base", seed=None)
    for seed in (0, 1):
        ntp, qs = runs["ntp", seed], runs["quiet-star", seed]
        _eval(store, "e1", f"ev-ntp{seed}", ntp, f"run:{ntp}", "math-test", scores[f"ntp{seed}"], arm="ntp", seed=seed)
        _eval(store, "e1", f"ev-ntp@{seed}", ntp, f"run:{ntp}@1", "math-test", scores[f"ntp@{seed}"],
              arm="ntp", seed=seed, steps_of="quiet-star")
        for key, mode in (("qs", "none"), ("qst", "thoughts"), ("qsc", "corrupted")):
            _eval(store, "e1", f"ev-{key}{seed}", qs, f"run:{qs}", "math-test", scores[f"{key}{seed}"],
                  arm="quiet-star", seed=seed, thought_mode=mode)
    _eval(store, "other", "ev-elsewhere", None, "m", "math-test", scores["base"], arm="base", seed=None)
    return store, runs, scores


def test_results_carry_explicit_columns(hand_made):
    store, runs, _ = hand_made
    res = ex.experiment_results(store, "e1").set_index("eval_id")
    assert "ev-elsewhere" not in res.index and len(res) == 11
    assert res.loc["ev-qst1", ["arm", "objective", "seed", "thought_mode", "is_final", "matched"]].tolist() == \
        ["quiet-star", "quiet-star", 1, "thoughts", True, ""]
    assert res.loc["ev-ntp@0", ["checkpoint_step", "is_final", "matched"]].tolist() == [1, False, "quiet-star"]
    assert res.loc["ev-ntp0", ["checkpoint_step", "is_final", "flops"]].tolist() == [2, True, 1e9]
    assert pd.isna(res.loc["ev-base", "seed"]) and res.loc["ev-base", "objective"] == ""


def test_pooled_deltas_equal_the_statistics_on_the_item_matrices(hand_made):
    store, _, s = hand_made
    res = ex.experiment_results(store, "e1")
    vs = ex.pooled_deltas(store, "e1", "reference", res, reference_arm="ntp", budget_mode="flops")
    got = {(r["thought_mode"], r["matched"]): r for r in vs.to_dict("records")}
    assert set(got) == {("none", "FLOPs"), ("thoughts", "FLOPs"), ("corrupted", "FLOPs"), ("none", "steps")}
    order = sorted(range(40), key=lambda i: f"test-{i}")          # items in item-id order
    want = stats.seed_pooled_delta([s["qs0"][order], s["qs1"][order]], [s["ntp0"][order], s["ntp1"][order]],
                                   arm_seeds=[0, 1], ref_seeds=[0, 1], n_boot=4000, seed=0)
    row = got["none", "FLOPs"]
    for k in ("delta", "ci_low", "ci_high", "seed_sd"):
        assert row[k] == pytest.approx(want[k]), k
    assert row["per_seed"] == pytest.approx({0: s["qs0"].mean() - s["ntp0"].mean(),
                                             1: s["qs1"].mean() - s["ntp1"].mean()})
    steps = got["none", "steps"]                                   # NTP at Quiet-STaR's steps, per seed
    assert steps["ref_eval_ids"] == ["ev-ntp@0", "ev-ntp@1"]
    assert steps["delta"] == pytest.approx((s["qs0"].mean() + s["qs1"].mean() - s["ntp@0"].mean()
                                            - s["ntp@1"].mean()) / 2)
    base = ex.pooled_deltas(store, "e1", "base", res, reference_arm="ntp")
    assert set(base["arm"]) == {"ntp", "quiet-star"} and (base["n_seeds_ref"] == 1).all()
    thought = ex.thought_deltas(store, "e1", res)
    assert sorted(zip(thought["ref_thought_mode"], thought["thought_mode"])) == [
        ("none", "corrupted"), ("none", "thoughts"), ("thoughts", "corrupted")]
    # Per seed: the pairs behind a pooled row, compared one by one as compare() does.
    pairs = ex.seed_pairs(row, res)
    assert [(a["eval_id"], b["eval_id"]) for a, b in pairs] == [("ev-ntp0", "ev-qs0"), ("ev-ntp1", "ev-qs1")]
    d = ex.compare_pairs(store, pairs)
    assert d["delta"].tolist() == pytest.approx([compare(store, a, b)["delta"] for a, b in
                                                 (("ev-ntp0", "ev-qs0"), ("ev-ntp1", "ev-qs1"))])


def test_flipped_items_list_compares_flips_with_outputs(hand_made):
    store, _, _ = hand_made
    c = compare(store, "ev-ntp0", "ev-qs0")
    items = ex.flipped_items(store, "ev-ntp0", "ev-qs0")
    assert sorted(items[items["direction"] == "right→wrong"]["item_id"]) == sorted(c["right_to_wrong"])
    assert sorted(items[items["direction"] == "wrong→right"]["item_id"]) == sorted(c["wrong_to_right"])
    assert items["output"].str.startswith("out ").all()
    assert items["prompt"].str.startswith("Problem: ").all()      # rebuilt from the spec


def test_score_table_gives_mean_and_spread_across_seeds(hand_made):
    store, _, s = hand_made
    table = ex.results.score_table(ex.experiment_results(store, "e1"))
    qs = table[(table["arm"] == "quiet-star") & (table["thought_mode"] == "none")].iloc[0]
    assert qs["n_seeds"] == 2 and qs["seeds"] == [0, 1]
    assert qs["mean"] == pytest.approx((s["qs0"].mean() + s["qs1"].mean()) / 2)
    assert (qs["min"], qs["max"]) == (min(s["qs0"].mean(), s["qs1"].mean()), max(s["qs0"].mean(), s["qs1"].mean()))
    matched = table[table["matched"] == "quiet-star"]
    assert len(matched) == 1 and matched["n_seeds"].iloc[0] == 2


# ---- the summary and the progress figure ---------------------------------------------------------
def _pooled_row(**over) -> dict:
    row = {"arm": "quiet-star", "label": "Quiet-STaR", "reference": "NTP", "benchmark": "math-test",
           "metric": "acc", "primary": True, "thought_mode": "none", "ref_thought_mode": "none",
           "matched": "FLOPs", "n_seeds": 3, "delta": 0.041, "ci_low": 0.012, "ci_high": 0.070,
           "seed_sd": 0.013, "verdict": "better, larger than the seed-to-seed spread"}
    return {**row, **over}


def test_summary_sentences_from_the_numbers():
    spec = ex.ExperimentSpec.from_dict(tiny_spec(seeds=3, pretrain={"steps": 600}))
    rows = [_pooled_row(),
            _pooled_row(benchmark="math-longer", delta=-0.008, ci_low=-0.035, ci_high=0.019,
                        verdict="no clear difference")]
    ctx = SummaryContext(spec, spec.titles(), 2.1e14, pd.DataFrame(rows), jobs_total=10, jobs_finished=10)
    text = summary(ctx)
    assert text[0] == ("After the same pretraining (600 NTP steps of tiny-random), at 2.1e14 training "
                       "FLOPs per run, 3 seeds per arm, on the same items of each benchmark:")
    assert text[1] == ("Quiet-STaR vs NTP on math-test (accuracy): +4.1 points (95 % CI +1.2 to +7.0, "
                       "3 seeds), better, larger than the seed-to-seed spread (sd 1.3 points); on "
                       "math-longer (accuracy): −0.8 points (95 % CI −3.5 to +1.9, 3 seeds), no clear difference.")
    assert any(t.startswith("Shifted splits: Quiet-STaR's gain on math-test does not hold") for t in text)
    assert fmt_delta(_pooled_row(metric="answer_nll", delta=-0.21, ci_low=-0.3, ci_high=-0.12)) == \
        "−0.210 nats (95 % CI −0.300 to −0.120, 3 seeds)"
    partial = summary(dataclasses.replace(ctx, jobs_finished=4))
    assert partial[0].startswith("Partial: 4 of 10 jobs")


def test_progress_is_weighted_by_estimated_cost():
    t0 = pd.Timestamp("2026-01-01 00:00:00")
    jobs = pd.DataFrame([
        # a finished training of arm a took 100 s; its twin (same category) is half done
        {"kind": "train", "category": "train:a", "status": "finished", "started_at": t0,
         "finished_at": t0 + pd.Timedelta(seconds=100)},
        {"kind": "train", "category": "train:a", "status": "running", "started_at": t0 + pd.Timedelta(seconds=100),
         "finished_at": pd.NaT},
        # an eval not started yet, no eval has run: the prior
        {"kind": "eval", "category": "eval:a", "status": "queued", "started_at": pd.NaT, "finished_at": pd.NaT}])
    at = t0 + pd.Timedelta(seconds=150)
    frac, eta = xp.estimate(jobs, [1.0, 0.5, 0.0], at, parallel=1)
    # weights: 100 (measured), 50 s / 0.5 = 100 (running), 60 (eval prior)
    assert frac == pytest.approx((100 + 50) / 260)
    assert eta == pytest.approx(50 + 60)
    assert xp.estimate(jobs, [1.0, 0.5, 0.0], at, parallel=2)[1] == pytest.approx(55)
    assert xp.estimate(jobs.iloc[:0], [], at) == (0.0, None)


def test_slow_checks_run_in_the_driver_and_a_failure_is_shown(data_dir):
    from lab.store import wait_for
    spec = ex.ExperimentSpec.from_dict(tiny_spec(model="no-such-org/no-such-model"))
    exp = ex.launch(spec, data_dir)                   # a hub id: not checked before launching
    assert ex.experiments(Store(data_dir))["id"].tolist() == [exp]          # listed at once
    assert wait_for(lambda: ex.read_state(data_dir, exp).get("state") == "failed", timeout=120, interval=0.5)
    p = ex.experiment_progress(Store(data_dir), exp)
    assert p.state == "failed" and "no-such-org/no-such-model" in p.error
    assert Store(data_dir).list_runs(kind=None).empty                       # no job was left behind
    assert wait_for(lambda: not ex.driver_alive(data_dir, exp), timeout=30)   # and it exits


def test_experiment_titles_are_printed_safely(data_dir):
    from lab.experiments.driver import spec_path, write_state
    spec = ex.ExperimentSpec.from_dict(tiny_spec(title="evil\x1b[2J\rtitle"))
    spec_path(data_dir, "exp-x").parent.mkdir(parents=True)
    spec_path(data_dir, "exp-x").write_text(spec.to_yaml())
    write_state(data_dir, "exp-x", state="failed", error="bad\x1b[31m")
    r = lab_cli("experiment", "list", data_dir=data_dir, timeout=60)
    assert r.returncode == 0 and "evil\\x1b[2J\\rtitle" in r.stdout and "\x1b" not in r.stdout
    r = lab_cli("experiment", "status", "exp-x", data_dir=data_dir, timeout=60)
    assert r.returncode == 0 and "\x1b" not in r.stdout and "failed" in r.stdout
