"""Paired statistics on hand-made vectors with known answers."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lab.evaluation import stats  # noqa: E402


def test_stderr_formula():
    # p = 0.75, sample sd (ddof=1) = sqrt(0.25 * 0.75 * 4 / 3) = 0.5, se = 0.5 / 2
    assert stats.stderr([1, 0, 1, 1]) == pytest.approx(0.25)
    x = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert stats.stderr(x) == pytest.approx(np.std(x, ddof=1) / math.sqrt(len(x)))
    assert math.isnan(stats.stderr([1.0]))
    # For 0/1 outcomes it equals sqrt(p(1-p)/(n-1)).
    y = [1] * 30 + [0] * 70
    assert stats.stderr(y) == pytest.approx(math.sqrt(0.3 * 0.7 / 99))


def test_ratio_stderr():
    assert stats.ratio_stderr([2, 4], [1, 2]) == pytest.approx(0.0)
    # Equal counts: same as the plain stderr of the per-item values.
    assert stats.ratio_stderr([1, 3], [1, 1]) == pytest.approx(stats.stderr([1, 3]))
    assert stats.ratio_stderr([5, 7, 1], [2, 2, 2]) == pytest.approx(stats.stderr([2.5, 3.5, 0.5]))


def test_mcnemar_hand_table():
    # a right / b wrong = 10, a wrong / b right = 2 (concordant cells do not matter)
    a = [1] * 10 + [0] * 2 + [1] * 30 + [0] * 18
    b = [0] * 10 + [1] * 2 + [1] * 30 + [0] * 18
    m = stats.mcnemar(a, b)
    assert (m["right_to_wrong"], m["wrong_to_right"]) == (10, 2)
    # exact: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert m["p_exact"] == pytest.approx(158 / 4096)
    # continuity: chi2 = (|10 - 2| - 1)^2 / 12 = 4.0833, p = 0.04331 (chi-square, 1 df)
    assert m["p_continuity"] == pytest.approx(0.043308, abs=1e-5)
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(3, 3) == 1.0
    # Textbook example (Agresti): b = 150, c = 86 -> chi2 without correction 17.36;
    # with correction (|150-86|-1)^2/236 = 16.82, p = 4.1e-5
    assert stats.mcnemar_chi2(150, 86) == pytest.approx(math.erfc(math.sqrt(16.818 / 2)), rel=1e-3)


def test_paired_bootstrap_contains_true_delta():
    rng = np.random.default_rng(123)
    n = 2000
    a = (rng.random(n) < 0.40).astype(float)
    b = (rng.random(n) < 0.50).astype(float)          # true delta = 0.10
    lo, hi = stats.paired_bootstrap(a, b, n_boot=4000, seed=7)
    assert lo < 0.10 < hi
    assert lo < b.mean() - a.mean() < hi
    # Seeded: the same seed gives the same interval, and it is about +-1.96 stderr wide.
    assert (lo, hi) == stats.paired_bootstrap(a, b, n_boot=4000, seed=7)
    se = stats.stderr(b - a)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_paired_bootstrap_identical_is_zero():
    a = [1, 0, 1, 1, 0]
    assert stats.paired_bootstrap(a, a, n_boot=200) == (0.0, 0.0)
    s = stats.paired_summary(a, a)
    assert s["delta"] == 0 and s["p_exact"] == 1.0 and s["right_to_wrong"] == 0


def test_paired_summary_continuous_has_no_mcnemar():
    s = stats.paired_summary([2.5, 3.0, 2.0], [2.0, 2.9, 1.5], n_boot=500)
    assert s["delta"] == pytest.approx(-1.1 / 3)
    assert s["p_exact"] is None and s["right_to_wrong"] is None
    assert s["ci_low"] <= s["delta"] <= s["ci_high"]


# ---- several seeds per arm (seed_pooled_delta), on arrays small enough to work by hand ----------
A2 = np.array([[1, 0, 1, 1],
               [0, 0, 1, 1]], dtype=float)      # arm: seeds 0 and 1 on four items
R2 = np.array([[0, 0, 1, 0],
               [1, 0, 0, 0]], dtype=float)      # reference (NTP): the same seeds and items


def test_seed_pooled_point_estimate_and_per_seed_deltas_by_hand():
    s = stats.seed_pooled_delta(A2, R2)
    # arm: (3/4 + 2/4) / 2 = 5/8; reference: (1/4 + 1/4) / 2 = 1/4; D = 3/8
    assert (s["score"], s["score_ref"], s["delta"]) == (5 / 8, 1 / 4, 3 / 8)
    # seed 0: 3/4 - 1/4 = 1/2; seed 1: 2/4 - 1/4 = 1/4; sd (ddof 1) = |1/2 - 1/4| / sqrt(2)
    assert s["per_seed"] == {0: 0.5, 1: 0.25}
    assert s["seed_sd"] == pytest.approx(0.25 / math.sqrt(2))
    assert (s["n_items"], s["n_seeds"], s["n_seeds_ref"]) == (4, 2, 2)
    assert s["ci_low"] <= s["delta"] <= s["ci_high"]
    # Seeds are paired by label: reversed labels on the reference pair 0 with its second row.
    flipped = stats.seed_pooled_delta(A2, R2[::-1], ref_seeds=[1, 0])
    assert flipped["per_seed"] == {0: 0.5, 1: 0.25} and flipped["delta"] == 3 / 8
    # One shared reference row (a base model) pairs with every seed of the arm.
    base = stats.seed_pooled_delta(A2, R2[:1], ref_seeds=[None])
    assert base["per_seed"] == {0: 0.5, 1: 0.25} and math.isnan(stats.seed_pooled_delta(
        A2[:1], R2[:1])["seed_sd"])


def test_identical_seeds_leave_only_the_item_component():
    rng = np.random.default_rng(0)
    a1 = (rng.random(60) < 0.6).astype(float)
    r1 = (rng.random(60) < 0.4).astype(float)
    one = stats.seed_pooled_delta([a1], [r1], n_boot=3000, seed=5)
    three = stats.seed_pooled_delta([a1] * 3, [r1] * 3, n_boot=3000, seed=5)
    assert three["delta"] == pytest.approx(one["delta"], rel=1e-12)
    assert (three["ci_low"], three["ci_high"]) == pytest.approx((one["ci_low"], one["ci_high"]), rel=1e-12)
    assert three["seed_sd"] == 0.0
    # ... and one seed is the ordinary paired bootstrap's setting: about as wide.
    lo, hi = stats.paired_bootstrap(r1, a1, n_boot=3000, seed=5)
    assert (one["ci_high"] - one["ci_low"]) == pytest.approx(hi - lo, rel=0.15)


def test_identical_items_leave_only_the_seed_component():
    # Every item of a seed has the same score: resampling items changes nothing.
    arm = np.array([[0.4] * 5, [0.6] * 5])
    ref = np.array([[0.3] * 5])
    s = stats.seed_pooled_delta(arm, ref, ref_seeds=[None], n_boot=4000, seed=1)
    # Seed draws (0,0), (0,1), (1,0), (1,1) with probability 1/4 each; deviations +-0.1 are
    # scaled by sqrt(2 / 1), so the means are 0.5 -+ 0.1 * sqrt(2) (1/4 each) and 0.5 (1/2).
    # The 2.5 % and 97.5 % quantiles fall on the two ends.
    c = 0.1 * math.sqrt(2)
    assert s["ci_low"] == pytest.approx(0.5 - c - 0.3)
    assert s["ci_high"] == pytest.approx(0.5 + c - 0.3)
    raw = stats.seed_pooled_delta(arm, ref, ref_seeds=[None], n_boot=4000, seed=1,
                                  small_sample_correction=False)
    assert (raw["ci_low"], raw["ci_high"]) == pytest.approx((0.1, 0.3))


def test_two_level_bootstrap_matches_the_enumeration_of_a_2x2_case():
    import itertools
    arm = np.array([[1.0, 0.0], [1.0, 1.0]])
    ref = np.array([[0.0, 0.0], [1.0, 0.0]])
    ca, cr = (m.mean(0) + (m - m.mean(0)) * math.sqrt(2) for m in (arm, ref))  # corrected
    exact: dict[float, float] = {}
    for items, sa, sr in itertools.product(itertools.product(range(2), repeat=2),
                                           itertools.product(range(2), repeat=2),
                                           itertools.product(range(2), repeat=2)):
        v = round(ca[list(sa)][:, list(items)].mean() - cr[list(sr)][:, list(items)].mean(), 9)
        exact[v] = exact.get(v, 0.0) + 1 / 64
    a, r = (stats._inflate_seed_deviations(m) for m in (arm, ref))
    draws = np.round(stats.pooled_bootstrap_draws(a, r, n_boot=40_000, seed=3), 9)
    values, counts = np.unique(draws, return_counts=True)
    assert set(values) <= set(exact)
    for v, n in zip(values, counts):
        assert n / len(draws) == pytest.approx(exact[v], abs=0.01), v

    def quantile(p: float) -> float:            # smallest value whose CDF reaches p
        acc = 0.0
        for v in sorted(exact):
            acc += exact[v]
            if acc >= p - 1e-12:
                return v
        return max(exact)
    s = stats.seed_pooled_delta(arm, ref, n_boot=40_000, seed=3)
    eps = 1e-8                                  # the exact values were rounded to 9 places
    assert quantile(0.015) - eps <= s["ci_low"] <= quantile(0.035) + eps
    assert quantile(0.965) - eps <= s["ci_high"] <= quantile(0.985) + eps
    assert s["delta"] == pytest.approx(0.75 - 0.25)


def test_seed_verdict_words():
    assert stats.seed_verdict(0.04, 0.01, 0.07, 0.01) == "better, larger than the seed-to-seed spread"
    assert stats.seed_verdict(0.04, 0.01, 0.07, 0.05) == "better, but within the seed-to-seed spread"
    assert stats.seed_verdict(0.04, -0.01, 0.07, 0.01) == "no clear difference"
    # Lower is better (NLL): a negative delta is an improvement.
    assert stats.seed_verdict(-0.2, -0.3, -0.1, 0.05, higher_is_better=False).startswith("better")
    assert stats.seed_verdict(0.2, 0.1, 0.3, float("nan")) == "better (one seed: seed spread unknown)"
    assert stats.seed_verdict(float("nan"), 0, 0, 0) == "–"


def test_paired_seeds_share_one_seed_draw():
    # Each seed's checkpoint scored twice (e.g. with and without thoughts): the second scoring is
    # the first plus 0.1 on every item. Pairing the seeds leaves no seed (or item) variation.
    arm = np.array([[0.2, 0.4, 0.6], [0.5, 0.7, 0.9]])
    ref = arm - 0.1
    paired = stats.seed_pooled_delta(arm, ref, paired_seeds=True, n_boot=2000, seed=2)
    assert (paired["ci_low"], paired["ci_high"]) == pytest.approx((0.1, 0.1))
    independent = stats.seed_pooled_delta(arm, ref, n_boot=2000, seed=2)
    assert independent["ci_high"] - independent["ci_low"] > 0.2      # the seeds' spread shows
    with pytest.raises(ValueError, match="same seeds"):
        stats.seed_pooled_delta(arm, ref[:1], paired_seeds=True)
