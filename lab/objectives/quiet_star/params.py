"""Quiet-STaR's settings (the `params` of a run)."""
from __future__ import annotations

from dataclasses import dataclass

from lab.config import setting

MIXINGS = ("unbounded", "sigmoid")
THOUGHT_POSITIONS = ("all", "forking")
THOUGHT_CONTENTS = ("sampled", "random")


@dataclass
class QuietSTaRParams:
    n_ahead: int = setting(12, "Thought length in tokens: <start>, n_ahead - 3 sampled tokens, <end> "
                           "(paper 12 on GPU).")
    n_ahead_talk: int = setting(4, "True tokens predicted after each thought (the reward looks this far ahead).")
    n_passes: int = setting(2, "Thoughts per position; the reward of each is its gain over their mean.")
    policy_weight: float = setting(1e6, "β in front of the REINFORCE term (the official code's value).",
                                   advanced=True)
    reinforce_temperature: float = setting(3.0, "Temperature of log π in the policy term.", advanced=True)
    sample_temperature: float = setting(1.0, "Temperature the thoughts are sampled at.", advanced=True)
    mixing: str = setting("unbounded", "Mixing weight w between the thought and no-thought predictions: "
                          "unbounded (official) or sigmoid in (0, 1).", advanced=True)
    meta_lr_scale: float = setting(100.0, "The <start>/<end> meta vectors are stored divided by this and "
                                   "used multiplied by it (a larger learning rate for them).", advanced=True)
    # issue 12: "reasoning belongs at the forking tokens"; the thought passes then run over the
    # chosen positions only, so their cost scales with the share.
    thought_positions: str = setting("all", "Where thoughts are generated: all = after every token; "
                                     "forking = only where the next token is among the top thought_share "
                                     "of the micro-batch by the base pass's entropy.")
    thought_share: float = setting(0.2, "forking thought positions: share of the micro-batch's positions "
                                   "that think.")
    # The scaffolding control: the head and the model still learn from the mixed NLL.
    thought_content: str = setting("sampled", "What a thought is: sampled = the policy's tokens, trained by "
                                   "REINFORCE; random = uniform random tokens of the same length drawn "
                                   "fresh each step, with no policy term (content vs scaffolding).")

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

