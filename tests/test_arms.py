"""Issue 12's arms in experiments: the ready-made arms validate and plan (settings reach the
run configs, the random-thought arm is evaluated with random thoughts only), the arms-cpu
preset puts them side by side with the shifted splits, and the summary answers each claim
from the numbers."""
from __future__ import annotations

import pandas as pd
import pytest

import lab.experiments as ex
from lab.errors import LabError
from lab.experiments.plan import make_plan
from lab.experiments.summary import SummaryContext, summary

QS = {"n_ahead": 4, "n_ahead_talk": 2}
TRAINING = dict(seq_len=32, batch_size=2, corpus_docs=40, lr=1e-3, checkpoint_every=0)


def arms_spec(**over) -> dict:
    arms = [{"id": "ntp", "objective": "ntp"}] + [
        {"id": a.id, "objective": a.objective, "title": a.title,
         "params": {**(QS if a.objective == "quiet-star" else {"group_size": 2, "max_thought_tokens": 4}),
                    **a.params}} for a in ex.ARM_CHOICES]
    spec = {"title": "arms", "model": "tiny-random", "training": dict(TRAINING), "arms": arms,
            "seeds": 1, "pretrain": {"steps": 1}, "branch": {"budget_steps": 2},
            "evaluation": {"benchmarks": ["math-test", "math-longer"], "limit": 2}}
    return {**spec, **over}


def test_arm_choices_plan_with_their_settings(tmp_path):
    spec = ex.ExperimentSpec.from_dict(arms_spec()).validate()
    by_id = {a.id: a for a in spec.arms}
    assert [a.id for a in spec.arms if a.at_forking] == ["quiet-star-forking", "rlp-forking"]
    assert [a.id for a in spec.arms if a.random_thoughts] == ["quiet-star-random"]
    assert spec.thought_modes_of(by_id["quiet-star-random"]) == ["corrupted"]
    assert spec.thought_modes_of(by_id["quiet-star-forking"]) == ["thoughts", "corrupted"]
    plan = make_plan(spec, "exp1", tmp_path)
    cfg = plan.configs
    assert cfg["train/quiet-star-forking/s0"].params["thought_positions"] == "forking"
    assert cfg["train/quiet-star-random/s0"].params["thought_content"] == "random"
    assert cfg["train/rlp-forking/s0"].params["position_sampling"] == "forking"
    assert all(c.max_flops == plan.budget_flops for k, c in cfg.items() if k != "pretrain")
    evals = {j.key: j for j in plan.jobs if j.kind == "eval"}
    assert "eval/quiet-star-random/s0/corrupted" in evals
    assert "eval/quiet-star-random/s0/thoughts" not in evals
    assert evals["eval/quiet-star-random/s0/corrupted"].name.endswith("with random thoughts · seed 0")
    with pytest.raises(LabError, match="random-thought arm has no thoughts"):
        bad = arms_spec()
        bad["arms"][3]["thought_modes"] = ["thoughts"]
        ex.ExperimentSpec.from_dict(bad).validate()
    with pytest.raises(LabError, match="thought_positions"):
        bad = arms_spec()
        bad["arms"][2]["params"]["thought_positions"] = "entropy"
        ex.ExperimentSpec.from_dict(bad).validate()


def test_arms_preset_sets_the_claims_side_by_side():
    spec = ex.load_preset("arms-cpu").validate()
    kinds = {a.id: (a.objective, a.at_forking, a.random_thoughts) for a in spec.arms}
    assert ("quiet-star", False, False) in kinds.values()          # every token, own thoughts
    assert ("quiet-star", True, False) in kinds.values()           # forking tokens only
    assert ("quiet-star", False, True) in kinds.values()           # random thoughts, trained
    assert ("rlp", True, False) in kinds.values() and ("rlp", False, False) in kinds.values()
    assert {"math-test", "math-longer", "math-format"} <= set(spec.evaluation.benchmarks)
    assert spec.branch.budget_mode == "flops" and spec.controls.thought_modes


def _row(arm: str, bench: str, mode: str, delta: float, better: bool, steps: float, flops: float) -> dict:
    return {"arm": arm, "benchmark": bench, "metric": "acc", "primary": True, "thought_mode": mode,
            "matched": "FLOPs", "n_seeds": 3, "delta": delta, "ci_low": delta - 0.02 if better else -0.05,
            "ci_high": delta + 0.02, "seed_sd": 0.01,
            "verdict": "better, larger than the seed-to-seed spread" if better else "no clear difference",
            "steps": steps, "steps_ref": 20.0, "flops": flops, "flops_ref": 100.0}


def test_summary_answers_the_note_claims():
    spec = ex.ExperimentSpec.from_dict(arms_spec(seeds=3))
    # NTP: 20 steps for 100 FLOPs (5 per step). Every token: 2 steps (10x NTP per step);
    # forking: 6 steps (about 3.3x); random: 2 steps.
    rows = [_row("quiet-star-every", "math-test", "thoughts", 0.05, True, 2, 100),
            _row("quiet-star-every", "math-longer", "thoughts", 0.04, True, 2, 100),
            _row("quiet-star-forking", "math-test", "thoughts", 0.045, True, 6, 100),
            _row("quiet-star-forking", "math-longer", "thoughts", 0.01, False, 6, 100),
            _row("quiet-star-random", "math-test", "corrupted", 0.0, False, 2, 100),
            _row("quiet-star-random", "math-longer", "corrupted", 0.0, False, 2, 100),
            _row("quiet-star-every", "math-test", "none", 0.01, False, 2, 100)]
    text = summary(SummaryContext(spec, spec.titles(), 1e12, pd.DataFrame(rows)))
    forking = next(t for t in text if t.startswith("Forking tokens only: Quiet-STaR (forking tokens)"))
    assert "Per step it costs 3.3× NTP against 10.0× at every position (6 vs 2 steps" in forking
    assert "Not fully: the gain on math-longer is not clear with forking tokens only (kept on math-test)" in forking
    random = next(t for t in text if t.startswith("Random thoughts, trained:"))
    assert random.endswith("Random thoughts do not do as well: the thoughts' content matters.")
    # random thoughts matching the real ones on every benchmark: scaffolding
    rows[4:6] = [_row("quiet-star-random", b, "corrupted", 0.05, True, 2, 100)
                 for b in ("math-test", "math-longer")]
    rows[3] = _row("quiet-star-forking", "math-longer", "thoughts", 0.04, True, 6, 100)
    text = summary(SummaryContext(spec, spec.titles(), 1e12, pd.DataFrame(rows)))
    assert any(t.endswith("the gain looks like scaffolding, not content.") for t in text)
    assert any(t.endswith("Yes: it keeps the gain on math-test, math-longer at a fraction of the cost.")
               for t in text)
    # RLP forking with no RLP rows: no sentence; without a gain at every token: nothing to keep
    assert not any("RLP (forking positions)" in t and t.startswith("Forking") for t in text)
    no_gain = [_row("quiet-star-every", b, "thoughts", 0.0, False, 2, 100) for b in ("math-test", "math-longer")]
    text = summary(SummaryContext(spec, spec.titles(), 1e12, pd.DataFrame(no_gain + rows[2:])))
    assert any(t.endswith("shows no clear gain, so there is no gain to keep.") for t in text)
    assert any(t.endswith("Random thoughts gain where the real ones do not.") for t in text)
    text = summary(SummaryContext(spec, spec.titles(), 1e12, pd.DataFrame(rows[2:])))
    assert any(t.endswith("(Quiet-STaR (every token) has no results to compare with yet.)") for t in text)
