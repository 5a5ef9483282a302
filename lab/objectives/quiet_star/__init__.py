"""Quiet-STaR (objectives.md §1): a thought after every token, generated for all positions in
parallel, and a mixing head that decides how much the post-thought prediction counts.

One concern per module:
    params.py     QuietSTaRParams, the run's settings and their checks
    head.py       the mixing head and meta vectors (QSHead), its checkpoint file
    passes.py     the parallel thought passes (mask, cache, sampling) and the support probe
    objective.py  the QuietSTaR objective: losses, rewards, metrics, records
    inference.py  think / think_text: inference with thoughts (evaluation, Playground)
"""
from lab.objectives.quiet_star.head import HEAD_NAME, QSHead, load_head, new_head
from lab.objectives.quiet_star.inference import think, think_text
from lab.objectives.quiet_star.objective import QuietSTaR, thought_rewards
from lab.objectives.quiet_star.params import QuietSTaRParams
from lab.objectives.quiet_star.passes import run_thoughts, sample_tokens, talk_windows

__all__ = ["HEAD_NAME", "QSHead", "QuietSTaR", "QuietSTaRParams", "load_head", "new_head",
           "run_thoughts", "sample_tokens", "talk_windows", "think", "think_text", "thought_rewards"]
