"""Evaluation: answer extraction, spec validation, the batched engine against unbatched
references, and end-to-end evals on the tiny random model into a DuckDB store."""
import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from lab.errors import LabError  # noqa: E402
from lab.evaluation import (  # noqa: E402  # noqa: E402
    BENCHMARKS,
    EvalSpec,
    add_cli_args,
    cli_main,
    compare,
    extract,
    prompts,
    resolve_model_spec,
    run_eval,
)
from lab.store import Store  # noqa: E402

DATA = Path(__file__).parents[1].parent / "shared" / "data"
GSM8K = DATA / "gsm8k_test.jsonl"
CSQA = DATA / "commonsenseqa_dev.jsonl"
needs_data = pytest.mark.skipif(not (GSM8K.exists() and CSQA.exists()),
                                reason="shared benchmark data not found")

torch.set_num_threads(1)


# ---- extraction ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("The answer is 18.", "18"),
    ("She makes $18 every day.", "18"),
    ("1,234 apples", "1234"),
    ("It costs $1,000,000.00 in total", "1000000"),
    ("The temperature fell to -3 degrees", "-3"),
    ("−7 is the result", "-7"),
    ("3.50 dollars", "3.5"),
    ("0.25", "0.25"),
    (" 42\nQ: next question 7", "42"),
    ("Janet sells 9 eggs. #### 18", "18"),
    ("so the answer is: $ 5.", "5"),
    ("\\boxed{12}", "12"),
    ("no number here", None),
])
def test_extract_number(text, expected):
    assert extract.extract_number(text, stops=prompts.QA_STOPS) == expected


def test_extract_number_first_last_and_targets():
    assert extract.extract_number("5 + 3 = 8 apples", which="first") == "5"
    assert extract.extract_number("5 + 3 = 8 apples", which="last") == "8"
    assert extract.extract_number("5 + 3 = 8. The answer is 8. Then 99", which="last") == "8"
    assert extract.gsm8k_target("She has 2 + 2 = <<2+2=4>>4\n#### 1,234") == "1234"
    assert extract.gsm8k_target("#### -5") == "-5"
    assert extract.same_number("18", "18.00") and extract.same_number("-3", "-3.0")
    assert not extract.same_number(None, "3") and not extract.same_number("3", "4")
    with pytest.raises(ValueError):
        extract.gsm8k_target("no hashes")


@pytest.mark.parametrize("text,expected", [
    ("The answer is (B)", "B"), ("b", "B"), ("B.", "B"), (" (C) ice", "C"), ("Answer: d", "D"),
    ("A", "A"), (" E)", "E"), ("I think E is right", "E"), (" C\nQ: next (A)", "C"),
    ("the answer is b.", "B"), ("a river", None), ("A river runs", None), ("", None),
    (" new york", "E"), ("library, for sure", "B"),
])
def test_extract_letter(text, expected):
    texts = ["bank", "library", "department store", "mall", "new york"]
    assert extract.extract_letter(text, ["A", "B", "C", "D", "E"], texts,
                                  stops=prompts.QA_STOPS) == expected


# ---- spec validation ------------------------------------------------------------------------
def test_spec_problems(tmp_path):
    assert any("unknown benchmark" in p for p in EvalSpec(benchmark="nope").problems())
    assert any("limit" in p for p in EvalSpec(benchmark="math-test", limit=-1).problems())
    assert any("batch_size" in p for p in EvalSpec(benchmark="math-test", batch_size=0).problems())
    assert any("thought_mode" in p for p in EvalSpec(benchmark="math-test", thought_mode="x").problems())
    assert any("needs data" in p for p in EvalSpec(benchmark="gsm8k").problems())
    missing = tmp_path / "nope.jsonl"
    assert any("does not exist" in p for p in EvalSpec(benchmark="csqa", data=str(missing)).problems())
    assert any("built-in" in p for p in EvalSpec(benchmark="math-test", data="x.jsonl").problems())
    assert EvalSpec(benchmark="math-test").problems() == []
    assert EvalSpec(benchmark="heldout-nll").problems() == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 3"}\nnot json\n')
    assert any("line 2" in p and "not valid JSON" in p
               for p in EvalSpec(benchmark="gsm8k", data=str(bad)).problems())


@needs_data
def test_wrong_format_file_is_a_clear_error(tmp_path):
    probs = EvalSpec(benchmark="gsm8k", data=str(CSQA)).problems()
    assert len(probs) == 1
    msg = probs[0]
    assert str(CSQA) in msg and "'answer'" in msg and "CommonsenseQA" in msg and "csqa" in msg
    probs = EvalSpec(benchmark="csqa", data=str(GSM8K)).problems()
    assert str(GSM8K) in probs[0] and "'choices'" in probs[0] and "'answerKey'" in probs[0]
    with pytest.raises(LabError, match="not a GSM8K file"):
        run_eval(EvalSpec(model="tiny-random", benchmark="gsm8k-cot", data=str(CSQA), limit=2),
                 Store(tmp_path / "d"))
    # A GSM8K-like file whose answers lack '#### N'.
    f = tmp_path / "noanswer.jsonl"
    f.write_text(json.dumps({"question": "q?", "answer": "just text"}) + "\n")
    assert "####" in EvalSpec(benchmark="gsm8k", data=str(f)).problems()[0]


# ---- the engine against unbatched references -------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    from lab.models import load_model
    lm = load_model("tiny-random")
    lm.model.eval()
    return lm


def _engine(lm, full=False):
    from lab.evaluation.engine import Engine
    fn = (lambda ids, mask: lm.model(input_ids=ids, attention_mask=mask).logits) if full else None
    return Engine(lm.model, lm.tokenizer, "cpu", logits_fn=fn)


def test_shared_prefix_scoring_matches_full_sequences(tiny):
    prefixes = ["Q: Where is a bank?\n(A) city\n(B) river\nA:", "Q: Hi?\nA:",
                "Q: A much longer question with many more words in it than the others?\nA:"]
    conts = [[" city", " river bank"], [" yes", " no", " maybe so"], [" x", " a long answer here"]]
    letters = [[389, 365], [389, 365, 334], [389, 365]]
    shared = _engine(tiny).score_choices(prefixes, conts, batch_size=2, letter_tokens=letters)
    full = _engine(tiny, full=True).score_choices(prefixes, conts, batch_size=3, letter_tokens=letters)
    for s, f in zip(shared, full):
        assert s["ntok"] == f["ntok"]
        assert s["logprob"] == pytest.approx(f["logprob"], abs=1e-4)
        assert s["letter_logprob"] == pytest.approx(f["letter_logprob"], abs=1e-4)


def test_batched_generation_matches_one_by_one(tiny):
    eng = _engine(tiny)
    ps = ["Q: What is 2 + 2?\nA:", "Problem: Ava has 3 apples.\nSolution:", "Hi"]
    batched = eng.generate(ps, max_new_tokens=6, batch_size=3)
    single = [eng.generate([p], max_new_tokens=6, batch_size=1)[0] for p in ps]
    assert batched == single
    # The plain greedy loop (used for thought modes) agrees with generate().
    assert _engine(tiny, full=True).generate(ps, max_new_tokens=6, batch_size=3) == batched


def test_token_stats_match_full_logits(tiny):
    texts = ["Problem: Ava has 3 apples. Then Ava gets 2 more apples.", "Short text"]
    st = _engine(tiny).token_stats(texts, batch_size=2, max_tokens=1024, chunk=4)
    for t, s in zip(texts, st):
        ids = torch.tensor([s["ids"]])
        logits = tiny.model(input_ids=ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1)
        nll = -lp.gather(-1, ids[0, 1:, None])[:, 0]
        from lab.entropy import token_entropy
        assert torch.allclose(s["nll"], nll, atol=1e-4)
        assert torch.allclose(s["entropy"], token_entropy(logits), atol=1e-4)


# ---- end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    """Every benchmark on tiny-random, 20 items each, into one store."""
    store = Store(tmp_path_factory.mktemp("evaldata"))
    out = {}
    for bench in BENCHMARKS:
        data = {"gsm8k": GSM8K, "csqa": CSQA}.get(BENCHMARKS[bench].data)
        if data is not None and not data.exists():
            continue
        seen = []
        df = run_eval(EvalSpec(model="tiny-random", benchmark=bench,
                               data=str(data) if data else None, limit=20, max_new_tokens=8,
                               batch_size=8), store, progress_callback=lambda f, m: seen.append(f))
        assert seen and seen[-1] == 1.0
        out[bench] = df
    return store, out


def test_end_to_end_all_benchmarks(evals):
    store, out = evals
    expected = set(BENCHMARKS) if GSM8K.exists() else {b for b in BENCHMARKS
                                                       if BENCHMARKS[b].data in ("builtin-math", "corpus")}
    assert set(out) == expected
    rows = store.query("SELECT * FROM evals ORDER BY benchmark")
    assert len(rows) == len(out)
    for bench, df in out.items():
        assert list(df.columns[:2]) == ["eval_id", "benchmark"]
        assert {"benchmark", "mode", "n", "score", "stderr"} <= set(df.columns)
        first = df.iloc[0]
        assert first["benchmark"] == bench and first["n"] == 20
        ev = store.query("SELECT * FROM evals WHERE id = ?", [first["eval_id"]]).iloc[0]
        assert ev["n_items"] == 20 and ev["model"] == "tiny-random" and ev["mode"] == BENCHMARKS[bench].mode
        assert ev["score"] == pytest.approx(first["score"])
        cfg = json.loads(ev["config"])
        assert cfg["prompt_version"] == prompts.PROMPT_VERSION and cfg["timing"]["items_per_s"] > 0
        items = store.query("SELECT * FROM eval_items WHERE eval_id = ? ORDER BY item_id",
                            [first["eval_id"]])
        assert len(items) == 20 and items["item_id"].is_unique
        assert items["correct"].mean() == pytest.approx(first["score"])
        if BENCHMARKS[bench].data != "corpus":         # heldout-nll, easy-heldout-nll: NLLs
            assert set(items["correct"].unique()) <= {0.0, 1.0}
            assert (items["target"] != "").all()
        extra = json.loads(items["extra"].iloc[0])
        if BENCHMARKS[bench].mode in ("direct", "cot", "gen"):
            assert "generation" in extra       # the raw generation is kept
    # csqa: three metrics; heldout: overall and forking NLL
    assert list(out["heldout-nll"]["metric"]) == ["nll", "nll-token", "nll-forking", "nll-nonforking", "ppl",
                                                  "forking_nll"]
    assert list(out["math-test"]["metric"]) == ["acc", "answer_nll", "solution_nll"]
    nll = out["heldout-nll"].set_index("metric")["score"]
    assert 5 < nll["nll"] < 15            # a random model over a 49k vocabulary: about ln(49152) = 10.8
    heldout = store.query("SELECT config FROM evals WHERE benchmark = 'heldout-nll'")["config"].iloc[0]
    info = json.loads(heldout)["info"]
    assert info["forking_tokens"] == round(0.2 * info["tokens"])
    if "csqa" in out:
        assert list(out["csqa"]["metric"]) == ["acc", "acc_norm", "letter"]
    if "gsm8k-cot" in out:
        items = store.query("SELECT extra FROM eval_items WHERE eval_id = ?",
                            [out["gsm8k-cot"]["eval_id"].iloc[0]])
        ex = json.loads(items["extra"].iloc[0])
        assert {"reasoning", "final_generation"} <= set(ex)


def test_bf16_evaluation_is_opt_in_recorded_and_close_to_fp32(evals):
    """fp32 is the default (the lm-eval agreement is in fp32); bf16 autocast is recorded in the
    eval's config and moves a random model's held-out NLL by little."""
    store, out = evals
    fp32 = out["heldout-nll"].set_index("metric")["score"]
    assert json.loads(store.query("SELECT config FROM evals WHERE id = ?", [out["heldout-nll"]["eval_id"].iloc[0]])
                      ["config"].iloc[0])["precision"] == "fp32"
    df = run_eval(EvalSpec(model="tiny-random", benchmark="heldout-nll", limit=20, batch_size=8,
                           precision="bf16"), store)
    cfg = json.loads(store.query("SELECT config FROM evals WHERE id = ?", [df["eval_id"].iloc[0]])["config"].iloc[0])
    assert cfg["precision"] == "bf16 autocast" and cfg["spec"]["precision"] == "bf16"
    bf16 = df.set_index("metric")["score"]
    assert bf16["nll"] != fp32["nll"] and abs(bf16["nll"] - fp32["nll"]) < 0.05
    with pytest.raises(LabError, match="different precisions"):
        compare(store, out["heldout-nll"]["eval_id"].iloc[0], df["eval_id"].iloc[0])
    assert "precision must be one of no, bf16, auto" in " ".join(
        EvalSpec(model="tiny-random", benchmark="heldout-nll", precision="fp8").problems())


def test_compare(evals):
    store, out = evals
    if "csqa" not in out:
        pytest.skip("no shared data")
    a, b = out["csqa"]["eval_id"].iloc[0], out["csqa-gen"]["eval_id"].iloc[0]
    r = compare(store, a, b)
    assert r["n"] == 20 and r["delta"] == pytest.approx(r["score_b"] - r["score_a"])
    assert r["ci_low"] <= r["delta"] <= r["ci_high"]
    assert r["n_right_to_wrong"] == len(r["right_to_wrong"])
    assert r["n_right_to_wrong"] - r["n_wrong_to_right"] == pytest.approx(-r["delta"] * 20)
    assert 0 <= r["p_mcnemar"] <= 1
    same = compare(store, a, a)
    assert same["delta"] == 0 and same["p_mcnemar"] == 1.0 and same["right_to_wrong"] == []
    h = out["heldout-nll"]["eval_id"].iloc[0]
    rh = compare(store, h, h)
    assert rh["p_mcnemar"] is None and rh["higher_is_better"] is False
    with pytest.raises(LabError, match="different benchmarks"):
        compare(store, a, h)
    with pytest.raises(LabError, match="No eval"):
        compare(store, a, "missing")


def test_cli(evals, capsys):
    store, _ = evals
    parser = add_cli_args(argparse.ArgumentParser())
    args = parser.parse_args(["--model", "tiny-random", "--benchmark", "math-format", "--limit", "3",
                              "--max-new-tokens", "4", "--eval-id", "cli-1"])
    assert cli_main(args, store) == 0
    out = capsys.readouterr().out
    assert "math-format" in out and "cli-1" in out
    assert store.query("SELECT n_items FROM evals WHERE id = ?", ["cli-1"])["n_items"].iloc[0] == 3
    # Same eval id again: replaced, not duplicated.
    assert cli_main(args, store) == 0
    assert len(store.query("SELECT * FROM eval_items WHERE eval_id = ?", ["cli-1"])) == 3
    assert cli_main(parser.parse_args(["--compare", "cli-1", "cli-1"]), store) == 0
    assert "McNemar" in capsys.readouterr().out
    assert cli_main(parser.parse_args(["--benchmark", "gsm8k", "--limit", "-1"]), store) == 2
    assert "limit" in capsys.readouterr().err


# ---- thought modes ---------------------------------------------------------------------------
def test_thought_mode_uses_think(tmp_path, monkeypatch, tiny):
    """With a stand-in `think` that returns plain logits, the thought path (full sequences,
    no cache) reproduces the normal path, and only Quiet-STaR runs are accepted."""
    import lab.models
    calls = []

    def think(loaded, ids, mask, *, corrupt, generator):
        calls.append(corrupt)
        return loaded.model(input_ids=ids, attention_mask=mask).logits

    from lab.objectives.quiet_star import inference
    monkeypatch.setattr(inference, "think", think)
    monkeypatch.setattr(lab.models, "load_model", lambda spec, data_dir=None, **kw: tiny)
    store = Store(tmp_path)
    store.create_run(config={"objective": "quiet-star", "model": "tiny-random"}, run_id="qs1")
    store.create_run(config={"objective": "ntp", "model": "tiny-random"}, run_id="ntp1")
    assert resolve_model_spec("qs1", store) == "run:qs1"
    base = run_eval(EvalSpec(model="run:qs1", benchmark="math-test", limit=3, max_new_tokens=4), store)
    thought = run_eval(EvalSpec(model="qs1", benchmark="math-test", limit=3, max_new_tokens=4,
                                thought_mode="corrupted"), store)
    assert calls and all(calls)
    assert thought["score"].iloc[0] == base["score"].iloc[0]
    g = store.query("SELECT e.run_id, i.prediction, i.extra FROM eval_items i JOIN evals e ON e.id = i.eval_id "
                    "ORDER BY e.created_at, i.item_id")
    assert set(g["run_id"]) == {"qs1"}
    gens = [json.loads(x)["generation"] for x in g["extra"]]
    assert gens[:3] == gens[3:]
    with pytest.raises(LabError, match="Quiet-STaR checkpoint"):
        run_eval(EvalSpec(model="ntp1", benchmark="math-test", limit=2, thought_mode="thoughts"), store)
    with pytest.raises(LabError, match="Quiet-STaR checkpoint"):
        run_eval(EvalSpec(model="tiny-random", benchmark="math-test", limit=2, thought_mode="thoughts"), store)


def test_thought_modes_on_a_real_quiet_star_checkpoint(tmp_path):
    """One training step of Quiet-STaR on tiny-random, then the thought modes through the
    real `think`."""
    from lab.config import RunConfig
    from lab.train import train
    store = Store(tmp_path).init()
    cfg = RunConfig.from_dict(dict(objective="quiet-star", model="tiny-random", corpus="builtin",
                                   corpus_docs=8, seq_len=32, batch_size=2, max_steps=1, lr=1e-3,
                                   checkpoint_every=0,
                                   params=dict(n_ahead=4, n_ahead_talk=2, n_passes=2))).validate()
    rid = store.create_run(config=cfg.to_dict(), status="running")
    train(cfg, rid, store)
    ids = {}
    for mode in ("none", "thoughts", "corrupted"):
        df = run_eval(EvalSpec(model=rid, benchmark="math-test", limit=2, max_new_tokens=2,
                               thought_mode=mode), store)
        ids[mode] = df["eval_id"].iloc[0]
        assert df["n"].iloc[0] == 2
        nll = run_eval(EvalSpec(model=rid, benchmark="heldout-nll", limit=2, thought_mode=mode), store)
        assert 5 < nll["score"].iloc[0] < 15
    runs = store.query("SELECT DISTINCT run_id FROM evals")["run_id"].tolist()
    assert runs == [rid]
    r = compare(store, ids["none"], ids["thoughts"])
    assert r["n"] == 2
