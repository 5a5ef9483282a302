"""Teacher-forced metrics of the built-in math splits (answer_nll, solution_nll) and eval jobs
that score several benchmarks with one model load."""
from __future__ import annotations

import json

import pytest
import torch

from lab.evaluation import EvalSpec
from lab.evaluation import teacher_forced as tf
from lab.evaluation.benchmarks import load_items
from lab.evaluation.engine import Engine
from lab.evaluation.runner import run_eval_job
from lab.models import load_model
from lab.store import Store


def test_result_spans_are_the_numbers_after_equals_and_the_final_answer():
    sol = ("Ava starts with 5 apples. After getting 12 more, Ava has 5 + 12 = 17 apples. "
           "Multiplying by 2 gives 17 x 2 = 34 apples. The answer is 34.")
    assert [sol[a:b] for a, b in tf.result_spans(sol)] == ["17", "34", "34"]
    fmt = "6 - 1 = 5; 5 x 3 = 15. So the result is 15. The answer is 15."
    assert [fmt[a:b] for a, b in tf.result_spans(fmt)] == ["5", "15", "15"]


def test_answer_and_solution_nll_match_a_hand_computation():
    lm = load_model("tiny-random")
    engine = Engine(lm.model.eval(), lm.tokenizer)
    item = load_items("math-test", None, 1)[0]
    got = tf.item_metrics(engine, [item], batch_size=1)[0]
    # By hand: one forward of prompt + " " + solution; NLL of each token given its prefix.
    text = item.prompt + " " + item.meta["solution"]
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    nll = [-float(lp[k - 1, ids[k]]) for k in range(1, len(ids))]
    pieces = [lm.tokenizer.decode([i]) for i in ids]
    starts = [sum(len(p) for p in pieces[:k]) for k in range(len(ids))]
    first = len(item.prompt) + 1
    spans = [(first + a, first + b) for a, b in tf.result_spans(item.meta["solution"])]
    sol = [nll[k - 1] for k in range(1, len(ids)) if starts[k] + len(pieces[k]) > first]
    ans = [nll[k - 1] for k in range(1, len(ids))
           if any(starts[k] < e and s < starts[k] + len(pieces[k]) for s, e in spans)]
    assert ans and len(ans) < len(sol)
    assert got["solution_nll"] == pytest.approx(sum(sol) / len(sol), rel=1e-4)
    assert got["answer_nll"] == pytest.approx(sum(ans) / len(ans), rel=1e-4)
    # The answer tokens decode to the result numbers.
    picked = "".join(p for k, p in enumerate(pieces) if k and any(
        starts[k] < e and s < starts[k] + len(p) for s, e in spans))
    assert picked.replace(" ", "") == "".join(item.meta["solution"][a:b] for a, b in tf.result_spans(
        item.meta["solution"]))


def test_one_eval_job_scores_several_benchmarks_with_per_item_metrics(data_dir):
    store = Store(data_dir).init()
    specs = [EvalSpec(model="tiny-random", benchmark=b, limit=3, max_new_tokens=4)
             for b in ("math-test", "heldout-nll")]
    seen: list[float] = []
    ids = run_eval_job(store, "job1", specs, progress_callback=lambda f, m: seen.append(f))
    assert ids == ["job1-math-test", "job1-heldout-nll"]
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    cfg = json.loads(store.query("SELECT config FROM evals WHERE id = 'job1-math-test'")["config"][0])
    assert cfg["item_metrics"] == ["answer_nll", "solution_nll"]
    items = store.query("SELECT extra FROM eval_items WHERE eval_id = 'job1-math-test'")
    per_item = [json.loads(e)["metrics"] for e in items["extra"]]
    assert all(m["answer_nll"] > 0 and m["solution_nll"] > 0 for m in per_item)
    assert cfg["metrics"]["answer_nll"]["score"] == pytest.approx(
        sum(m["answer_nll"] for m in per_item) / len(per_item))
