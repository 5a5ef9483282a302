"""The sentence under each experiment chart (lab/experiments/takeaways.py), on hand-made tables
whose answer is known."""
from __future__ import annotations

import pandas as pd

from lab.experiments import takeaways


def score_rows(*rows):
    return pd.DataFrame([dict(label=l, benchmark=b, metric=m, higher_is_better=m == "acc", matched="",
                              primary=m == "acc", mean=mean, min=lo, max=hi)
                         for l, b, m, mean, lo, hi in rows])


def test_scores_name_the_best_arm_whether_seeds_separate_it_and_chance():
    df = score_rows(("NTP", "csqa", "acc", 0.30, 0.28, 0.32), ("RLP", "csqa", "acc", 0.22, 0.21, 0.23),
                    ("NTP", "heldout-nll", "nll", 3.1, 3.0, 3.2), ("RLP", "heldout-nll", "nll", 3.15, 3.05, 3.3))
    acc = takeaways.scores(df, True)
    assert acc.startswith("Takeaway: accuracy (csqa): best NTP (0.300), clear of the next (RLP, 0.220)")
    assert "2 of 2 above chance (0.20)" in acc
    nll = takeaways.scores(df, False)
    assert "best NTP (3.100), its seeds overlap the next arm's" in nll and "chance" not in nll


def test_scores_at_chance_or_zero_say_the_benchmark_cannot_tell():
    df = score_rows(("NTP", "csqa", "acc", 0.18, 0.17, 0.19), ("RLP", "csqa", "acc", 0.16, 0.15, 0.2))
    assert "none above chance (0.20)" in takeaways.scores(df, True)
    zero = score_rows(("NTP", "math-test", "acc", 0.0, 0.0, 0.0), ("RLP", "math-test", "acc", 0.0, 0.0, 0.0))
    assert "every arm scores 0" in takeaways.scores(zero, True)
    assert takeaways.scores(zero, False) == ""                       # no NLL chart, no sentence


def test_deltas_count_verdicts_and_name_the_largest_clear_one():
    d = pd.DataFrame([
        dict(label="RLP", reference="NTP", benchmark="csqa", metric="acc", delta=-0.05, verdict="worse, larger than the seed-to-seed spread"),
        dict(label="RPT", reference="NTP", benchmark="csqa", metric="acc", delta=0.02, verdict="no clear difference"),
        dict(label="QS", reference="NTP", benchmark="csqa", metric="acc", delta=0.08, verdict="better, but within the seed-to-seed spread")])
    text = takeaways.deltas(d)
    assert "of 3 comparisons, 1 clearly better, 1 clearly worse, 1 with no clear difference" in text
    assert "QS vs NTP on accuracy (csqa), +8 points" in text
    unclear = takeaways.deltas(d.iloc[[1]])
    assert "cannot be told apart" in unclear and "largest" not in unclear


def test_curve_gives_each_arm_first_and_last_without_ranking_objectives():
    m = pd.DataFrame([dict(run_id=r, name="loss", step=s, value=v) for r, s, v in
                      [("a1", 1, 4.0), ("a1", 2, 3.0), ("a2", 1, 6.0), ("a2", 2, 5.0), ("b1", 1, 7.0)]])
    text = takeaways.curve(m, "loss", {"a1": "ntp", "a2": "ntp", "b1": "qs"}, {"ntp": "NTP", "qs": "Quiet-STaR"},
                           "Training loss")
    assert "NTP 5 → 4 over 2 logged steps" in text and "Quiet-STaR 7 at its only logged step" in text
    assert "measures something different" in text
    assert takeaways.curve(m, "reward/mean", {"a1": "ntp"}, {}, "Reward") == ""
