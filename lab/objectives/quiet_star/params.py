"""Quiet-STaR's settings (the `params` of a run)."""
from __future__ import annotations

from dataclasses import dataclass

MIXINGS = ("unbounded", "sigmoid")
THOUGHT_POSITIONS = ("all", "forking")
THOUGHT_CONTENTS = ("sampled", "random")


@dataclass
class QuietSTaRParams:
    n_ahead: int = 12                  # thought = <start>, n_ahead - 3 sampled tokens, <end>
    n_ahead_talk: int = 4              # true tokens predicted after the thought
    n_passes: int = 2                  # thoughts per position (reward baseline = their mean)
    policy_weight: float = 1e6         # β in front of the REINFORCE term
    reinforce_temperature: float = 3.0  # temperature of log π in the policy term
    sample_temperature: float = 1.0    # temperature thoughts are sampled at
    mixing: str = "unbounded"          # mixing weight w: unbounded (official) | sigmoid in (0, 1)
    meta_lr_scale: float = 100.0       # meta vectors stored /scale, used ×scale (×scale lr)
    # Where thoughts are generated: all = after every token; forking = only after the tokens
    # whose next token is among the top `thought_share` of the micro-batch by base entropy
    # (issue 12: "reasoning belongs at the forking tokens"); the thought passes then run over
    # those positions only, so their cost scales with the share.
    thought_positions: str = "all"
    thought_share: float = 0.2         # forking: share of the micro-batch's positions that think
    # What a thought is: sampled = the policy's tokens, trained by REINFORCE; random = uniform
    # random tokens of the same length drawn fresh every step, no policy term (the
    # scaffolding control: the head and the model still learn from the mixed NLL).
    thought_content: str = "sampled"

    def problems(self, cfg) -> list[str]:
        out = []
        if self.n_ahead < 3:
            out.append(f"n_ahead must be at least 3 (<start>, <end> and the post-thought step; "
                       f"got {self.n_ahead})")
        if self.n_ahead_talk < 1:
            out.append(f"n_ahead_talk must be at least 1 (got {self.n_ahead_talk})")
        if self.n_passes < 1:
            out.append(f"n_passes (thoughts per position) must be at least 1 (got {self.n_passes})")
        seq_len = getattr(cfg, "seq_len", None)
        if seq_len is not None and self.n_ahead + self.n_ahead_talk >= seq_len:
            out.append(f"n_ahead + n_ahead_talk ({self.n_ahead + self.n_ahead_talk}) must be "
                       f"smaller than seq_len ({seq_len})")
        if self.policy_weight < 0:
            out.append(f"policy_weight must be >= 0 (got {self.policy_weight})")
        for name in ("reinforce_temperature", "sample_temperature", "meta_lr_scale"):
            if not getattr(self, name) > 0:
                out.append(f"{name} must be positive (got {getattr(self, name)})")
        if self.mixing not in MIXINGS:
            out.append(f"mixing must be one of {', '.join(MIXINGS)} (got {self.mixing!r})")
        if self.thought_positions not in THOUGHT_POSITIONS:
            out.append(f"thought_positions must be one of {', '.join(THOUGHT_POSITIONS)} "
                       f"(got {self.thought_positions!r})")
        if not 0 < self.thought_share <= 1:
            out.append(f"thought_share must be in (0, 1] (got {self.thought_share})")
        if self.thought_content not in THOUGHT_CONTENTS:
            out.append(f"thought_content must be one of {', '.join(THOUGHT_CONTENTS)} "
                       f"(got {self.thought_content!r})")
        return out

