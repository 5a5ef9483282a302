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
