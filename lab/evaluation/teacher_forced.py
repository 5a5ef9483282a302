"""Teacher-forced metrics of the built-in math splits: sensitive where exact match is not.

A model that has learned the format but not yet the arithmetic scores 0 exact answers, yet
its probability of the right numbers already moves. One forward pass of the gold solution
per item (`prompt + " " + solution`, the corpus' own text) gives, per item:

- `answer_nll`: mean NLL (nats) of the result tokens: the number after each "=" and the
  final answer ("The answer is N"), each given the problem and the gold solution before it;
- `solution_nll`: mean NLL per token of the whole gold solution.

Lower is better for both. Token offsets come from decoding each token on its own, so any
tokenizer works (a byte-level one included).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from lab.evaluation.benchmarks import Item

RESULT_NUMBER = re.compile(r"(?:=|answer is)\s*(-?\d[\d,]*(?:\.\d+)?)")
MAX_TOKENS = 4096                       # a gold solution is never cut shorter than this
METRICS = ("answer_nll", "solution_nll")


def result_spans(solution: str) -> list[tuple[int, int]]:
    """Character spans of the result numbers of a gold solution (after '=' and 'answer is')."""
    return [m.span(1) for m in RESULT_NUMBER.finditer(solution)]


def token_offsets(tokenizer, ids: Sequence[int]) -> list[int]:
    """Start offset of each token in the decoded text, plus the end: len(ids) + 1 numbers.
    Decoding each token alone is exact for text whose pieces decode independently (ASCII
    math); otherwise prefixes are decoded one by one."""
    pieces = tokenizer.batch_decode([[int(i)] for i in ids])
    full = tokenizer.decode(list(ids))
    if "".join(pieces) != full:
        ends = [len(tokenizer.decode(list(ids[:k + 1]))) for k in range(len(ids))]
        return [0] + ends
    out = [0]
    for p in pieces:
        out.append(out[-1] + len(p))
    return out


def item_metrics(engine, items: list[Item], *, batch_size: int, progress=None) -> list[dict[str, Any]]:
    """{"answer_nll", "solution_nll"} per item (None where a value has no token to average)."""
    texts = [it.prompt + " " + it.meta["solution"] for it in items]
    stats = engine.token_stats(texts, batch_size=batch_size, max_tokens=MAX_TOKENS, progress=progress,
                               with_entropy=False)
    out = []
    for it, text, st in zip(items, texts, stats):
        offs = token_offsets(engine.tok, st["ids"])
        start = len(it.prompt) + 1                       # the solution's first character
        spans = [(start + a, start + b) for a, b in result_spans(it.meta["solution"])]
        sol, ans = [], []
        for k in range(1, len(st["ids"])):               # nll[k - 1] predicts token k
            a, b = offs[k], offs[k + 1]
            if b <= start:
                continue
            v = float(st["nll"][k - 1])
            sol.append(v)
            if any(a < e and s < b for s, e in spans):
                ans.append(v)
        out.append({"answer_nll": sum(ans) / len(ans) if ans else None,
                    "solution_nll": sum(sol) / len(sol) if sol else None})
    return out
