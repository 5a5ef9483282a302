"""Statistics for scores and paired comparisons (no scipy needed).

- `stderr(x)`: standard error of a mean, sample standard deviation (ddof = 1) / sqrt(n);
  for 0/1 scores that is sqrt(p(1 - p) / (n - 1)). NaN when n < 2.
- `ratio_stderr(sums, counts)`: standard error of a token-weighted mean sum(x)/sum(n)
  over documents (delta-method ratio estimator).
- `paired_bootstrap(a, b)`: percentile CI of mean(b - a) from resampling items with
  replacement (the same items for both models), seeded.
- `mcnemar(a, b)`: two-sided McNemar test on the discordant pairs of 0/1 outcomes, exact
  (binomial) and with the continuity-corrected chi-square.
- `seed_pooled_delta(arm, ref)`: an arm against a reference when each has several training
  seeds scored on the same items: pooled delta, two-level bootstrap CI (items and seeds),
  per-seed deltas and their spread; `seed_verdict` puts it in words.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _arr(x: Sequence[float]) -> np.ndarray:
    return np.asarray(list(x) if not isinstance(x, np.ndarray) else x, dtype=np.float64)


def mean(x: Sequence[float]) -> float:
    a = _arr(x)
    return float(a.mean()) if a.size else float("nan")


def stderr(x: Sequence[float]) -> float:
    a = _arr(x)
    if a.size < 2:
        return float("nan")
    return float(a.std(ddof=1) / math.sqrt(a.size))


def ratio_stderr(sums: Sequence[float], counts: Sequence[float]) -> float:
    """Standard error of R = sum(sums) / sum(counts), items as the sampling unit."""
    s, c = _arr(sums), _arr(counts)
    n = s.size
    if n < 2 or c.sum() <= 0:
        return float("nan")
    r = s.sum() / c.sum()
    resid = s - r * c
    cbar = c.mean()
    return float(math.sqrt((resid ** 2).sum() / (n - 1) / n) / cbar)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, n_boot: int = 10_000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of mean(b) - mean(a) over paired items."""
    x, y = _arr(a), _arr(b)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    d = y - x
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(n, 1))
    for i in range(0, n_boot, chunk):
        k = min(chunk, n_boot - i)
        idx = rng.integers(0, n, size=(k, n))
        out[i:i + k] = d[idx].mean(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(out, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def discordant(a: Sequence[float], b: Sequence[float]) -> tuple[int, int]:
    """(right->wrong, wrong->right) counts going from a to b, on 0/1 outcomes."""
    x, y = _arr(a) > 0.5, _arr(b) > 0.5
    return int((x & ~y).sum()), int((~x & y).sum())


def mcnemar_exact(n10: int, n01: int) -> float:
    """Two-sided exact McNemar p-value: 2 * P(X <= min) with X ~ Binomial(n10 + n01, 1/2)."""
    n = n10 + n01
    if n == 0:
        return 1.0
    k = min(n10, n01)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2.0 * tail)


def mcnemar_chi2(n10: int, n01: int) -> float:
    """Two-sided McNemar p-value with continuity correction: chi2 = (|b - c| - 1)^2 / (b + c)."""
    n = n10 + n01
    if n == 0:
        return 1.0
    chi2 = max(abs(n10 - n01) - 1, 0) ** 2 / n
    return math.erfc(math.sqrt(chi2 / 2.0))   # survival function of chi-square with 1 df


def mcnemar(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    n10, n01 = discordant(a, b)
    return {"right_to_wrong": n10, "wrong_to_right": n01,
            "p_exact": mcnemar_exact(n10, n01), "p_continuity": mcnemar_chi2(n10, n01)}


def is_binary(x: Sequence[float]) -> bool:
    a = _arr(x)
    return bool(np.all((a == 0) | (a == 1)))


def paired_summary(a: Sequence[float], b: Sequence[float], *, seed: int = 0,
                   n_boot: int = 10_000, level: float = 0.95) -> dict:
    """Everything `compare` reports on two aligned outcome vectors (b minus a)."""
    x, y = _arr(a), _arr(b)
    d = y - x
    lo, hi = paired_bootstrap(x, y, n_boot=n_boot, seed=seed, level=level)
    out = {"n": int(x.size), "score_a": mean(x), "score_b": mean(y), "delta": mean(d),
           "stderr": stderr(d), "ci_low": lo, "ci_high": hi, "ci_level": level,
           "n_boot": n_boot, "seed": seed}
    if x.size and is_binary(x) and is_binary(y):
        out.update(mcnemar(x, y))
    else:
        out.update({"right_to_wrong": None, "wrong_to_right": None, "p_exact": None,
                    "p_continuity": None})
    return out


# ---- several seeds per arm ---------------------------------------------------------------------
def seed_pooled_delta(arm: Sequence[Sequence[float]], ref: Sequence[Sequence[float]], *,
                      arm_seeds: Sequence | None = None, ref_seeds: Sequence | None = None,
                      n_boot: int = 4_000, seed: int = 0, level: float = 0.95,
                      small_sample_correction: bool = True, paired_seeds: bool = False,
                      item_counts: np.ndarray | None = None) -> dict:
    """Delta of an arm against a reference when each was trained with several seeds and every
    seed was scored on the same items (docs/evaluation.md, "Several seeds").

    arm: [S_a, N] scores (row = seed, column = item), ref: [S_r, N] on the same N items (S_r
    may be 1: a shared base model). Point estimate D = mean over seeds of the arm's mean score
    minus the same for the reference. CI: percentile bootstrap with two levels: each replicate
    draws N items with replacement (one draw shared by arm and reference, so the pairing is
    kept) and, independently for arm and reference, S seeds with replacement.
    With few seeds a bootstrap of S values underestimates their variance by (S - 1) / S; with
    `small_sample_correction` each seed's deviation from the seed mean is scaled by
    sqrt(S / (S - 1)) first, so the seed component has the unbiased variance s^2 / S.
    `item_counts` ([n_boot, N], from item_draw_counts) reuses one item draw for several
    comparisons on the same items, as the experiment tables do. `paired_seeds`: row s of arm
    and reference come from the same training run (e.g. one checkpoint evaluated with and
    without thoughts), so one seed draw serves both sides.

    Per-seed deltas pair arm seed s with reference seed s (labels from arm_seeds / ref_seeds,
    default 0..S-1); a single reference row pairs with every arm seed. Their sample standard
    deviation is the seed-to-seed spread (NaN with fewer than two pairs)."""
    a, r = np.atleast_2d(_arr2(arm)), np.atleast_2d(_arr2(ref))
    if a.shape[1] != r.shape[1]:
        raise ValueError(f"arm and reference must score the same items ({a.shape[1]} vs {r.shape[1]})")
    n = a.shape[1]
    a_ids = list(arm_seeds) if arm_seeds is not None else list(range(a.shape[0]))
    r_ids = list(ref_seeds) if ref_seeds is not None else list(range(r.shape[0]))
    per_seed = _per_seed_deltas(a.mean(axis=1), r.mean(axis=1), a_ids, r_ids)
    out = {"delta": float(a.mean() - r.mean()) if n else float("nan"),
           "score": float(a.mean()) if n else float("nan"),
           "score_ref": float(r.mean()) if n else float("nan"),
           "n_items": int(n), "n_seeds": int(a.shape[0]), "n_seeds_ref": int(r.shape[0]),
           "per_seed": per_seed,
           "seed_sd": float(np.std(list(per_seed.values()), ddof=1)) if len(per_seed) > 1 else float("nan"),
           "ci_low": float("nan"), "ci_high": float("nan"), "ci_level": level, "n_boot": n_boot,
           "boot_seed": seed}
    if n == 0:
        return out
    if small_sample_correction:
        a, r = _inflate_seed_deviations(a), _inflate_seed_deviations(r)
    if paired_seeds and (a.shape[0] != r.shape[0] or a_ids != r_ids):
        raise ValueError("paired seeds need the same seeds, in the same order, on both sides")
    draws = pooled_bootstrap_draws(a, r, n_boot=n_boot, seed=seed, item_counts=item_counts,
                                   paired_seeds=paired_seeds)
    alpha = (1.0 - level) / 2
    out["ci_low"], out["ci_high"] = (float(v) for v in np.quantile(draws, [alpha, 1.0 - alpha]))
    return out


def item_draw_counts(n: int, *, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] counts: how often each of n items is drawn in each bootstrap replicate
    (n draws with replacement per replicate), as floats ready for matrix products."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, n), dtype=np.float64)
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(k, n)) + n * np.arange(k)[:, None]
        out[start:start + k] = np.bincount(idx.ravel(), minlength=k * n).reshape(k, n)
    return out


def pooled_bootstrap_draws(a: np.ndarray, r: np.ndarray, *, n_boot: int, seed: int,
                           item_counts: np.ndarray | None = None,
                           paired_seeds: bool = False) -> np.ndarray:
    """The bootstrap replicates of seed_pooled_delta (matrices already corrected).

    A replicate is sum_s w_a[s] * (c @ A.T)[s] / N - sum_s w_r[s] * (c @ R.T)[s] / N, where c
    counts how often each item was drawn and w are the seed draw frequencies: only [B, S]
    products, never a [B, S, N] array. Items and seeds come from separate generators, so the
    item draws do not depend on how many seeds there are."""
    n = a.shape[1]
    counts = item_draw_counts(n, n_boot=n_boot, seed=seed) if item_counts is None else item_counts
    if counts.shape != (n_boot, n):
        raise ValueError(f"item_counts must be [{n_boot}, {n}] (got {list(counts.shape)})")
    seed_rng = np.random.default_rng([seed, 1])
    wa = _seed_weights(seed_rng, a.shape[0], n_boot)
    wr = wa if paired_seeds else _seed_weights(seed_rng, r.shape[0], n_boot)
    return ((counts @ a.T) * wa).sum(1) / n - ((counts @ r.T) * wr).sum(1) / n


def _seed_weights(rng: np.random.Generator, s: int, k: int) -> np.ndarray:
    """[k, s] frequencies of s seeds drawn with replacement (one seed: always weight 1)."""
    if s == 1:
        return np.ones((k, 1))
    draws = rng.integers(0, s, size=(k, s))
    return np.stack([(draws == j).sum(1) for j in range(s)], axis=1) / s


def _inflate_seed_deviations(x: np.ndarray) -> np.ndarray:
    s = x.shape[0]
    if s < 2:
        return x
    mean = x.mean(axis=0, keepdims=True)
    return mean + (x - mean) * math.sqrt(s / (s - 1))


def _per_seed_deltas(a_means: np.ndarray, r_means: np.ndarray, a_ids: list, r_ids: list) -> dict:
    if len(r_ids) == 1:
        return {sid: float(m - r_means[0]) for sid, m in zip(a_ids, a_means)}
    ref = dict(zip(r_ids, r_means))
    return {sid: float(m - ref[sid]) for sid, m in zip(a_ids, a_means) if sid in ref}


def _arr2(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def seed_verdict(delta: float, ci_low: float, ci_high: float, seed_sd: float,
                 higher_is_better: bool = True) -> str:
    """Plain words for a seed-pooled delta: a difference only when the CI excludes 0, and
    whether it is larger than the seed-to-seed spread (|D| > sd of the per-seed deltas)."""
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (delta, ci_low, ci_high)):
        return "–"
    if ci_low <= 0 <= ci_high:
        return "no clear difference"
    better = (delta > 0) == higher_is_better
    word = "better" if better else "worse"
    if seed_sd is None or (isinstance(seed_sd, float) and math.isnan(seed_sd)):
        return f"{word} (one seed: seed spread unknown)"
    if abs(delta) > seed_sd:
        return f"{word}, larger than the seed-to-seed spread"
    return f"{word}, but within the seed-to-seed spread"
