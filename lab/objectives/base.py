"""The objective interface: the training loop (lab/train.py) knows nothing else about a method.

To add an objective: write one module with a `Params` dataclass and an `Objective`
subclass, and add one line to the registry in lab/objectives/__init__.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class NoParams:
    def problems(self, cfg) -> list[str]:
        return []


@dataclass
class StepOutput:
    loss: torch.Tensor                      # scalar; the loop calls accelerator.backward on it
    metrics: dict[str, float]               # logged every step (names shared across methods)
    tokens: int                             # tokens consumed (for tokens/s)
    flops: float                            # training FLOPs of this step, rollouts included
    token_records: list[dict[str, Any]] = field(default_factory=list)    # -> table `tokens`
    thought_records: list[dict[str, Any]] = field(default_factory=list)  # -> table `thoughts`


class Objective:
    """One training method. Subclasses set `name`, `Params`, and implement `step`."""

    name: str = ""
    Params: type = NoParams
    description: str = ""

    def __init__(self, model, tokenizer, params, cfg, device: torch.device) -> None:
        # `model` is the module to call for gradient-bearing forwards (the loop may replace it
        # by accelerate's wrapped version through `bind`); `raw_model` is the plain Hugging
        # Face model, for generate(), config, embeddings and no-grad work.
        self.model, self.raw_model = model, model
        self.tokenizer, self.params, self.cfg, self.device = tokenizer, params, cfg, device
        from lab.models import describe
        self.desc = describe(model)

    def bind(self, model, extras: dict[str, torch.nn.Module]) -> None:
        """Called by the loop after accelerator.prepare: use the prepared model and modules."""
        self.model = model
        for name, module in extras.items():
            setattr(self, name, module)

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Trainable modules besides the model (e.g. Quiet-STaR's mixing head), keyed by the
        attribute name they live under. They are moved to the device, optimised with the
        model, and saved in checkpoints as safetensors."""
        return {}

    def step(self, batch: dict[str, torch.Tensor], *, record: int) -> StepOutput:
        """One micro-batch: return the loss to backpropagate and what to log.
        `record` > 0 asks for that many sample sequences' token/thought records."""
        raise NotImplementedError

    def lr_multiplier(self) -> float:
        """Factor on the run's learning rate for the next optimizer step (RPT's format warm-up
        trains at its own rate)."""
        return 1.0

    def after_optimizer_step(self) -> None:
        """Called after every optimizer step (RLP updates its EMA teacher here)."""

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Extra state (beyond extra_modules) to checkpoint, e.g. an EMA teacher."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass
