"""Quiet-STaR's settings (the `params` of a run)."""
from __future__ import annotations

from dataclasses import dataclass

MIXINGS = ("unbounded", "sigmoid")


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
        return out

