"""Quiet-STaR's trainable extras: the mixing head, the <start>/<end> meta vectors, and their
checkpoint file (`extra_qs_head.safetensors`)."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from lab.errors import LabError
from lab.objectives.quiet_star.params import QuietSTaRParams

HEAD_NAME = "qs_head"            # extra module name: checkpoints hold extra_qs_head.safetensors
META_INIT_TEXT = "---"           # meta-tokens start from this token's embedding (official code)
SIGMOID_START_W = 0.01           # the sigmoid head cannot start at exactly w = 0


class QSHead(nn.Module):
    """Mixing head MLP on [h_base, h_thought] and the <start>/<end> input vectors.

    The meta vectors are stored divided by `scale` and multiplied by it when used (official
    code: an effective ×scale learning rate). `scale`, the mixing kind, the trained n_ahead and
    whether it was trained on random thoughts are buffers, so the safetensors file alone
    rebuilds the head (`load_head`) and inference thinks the way training did."""

    def __init__(self, hidden: int, init: torch.Tensor | None = None, *, scale: float = 100.0,
                 mixing: str = "unbounded", n_ahead: int = 12, random_thoughts: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)   # w = 0 at start: training starts at the base model
        nn.init.zeros_(self.mlp[-1].bias)
        if mixing == "sigmoid":
            nn.init.constant_(self.mlp[-1].bias, math.log(SIGMOID_START_W / (1 - SIGMOID_START_W)))
        init = torch.zeros(hidden) if init is None else init.detach().float().reshape(hidden)
        self.start = nn.Parameter(init / scale)
        self.end = nn.Parameter(init / scale)
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.register_buffer("sigmoid", torch.tensor(mixing == "sigmoid"))
        self.register_buffer("n_ahead", torch.tensor(int(n_ahead)))  # inference default
        self.register_buffer("random_thoughts", torch.tensor(bool(random_thoughts)))

    def meta(self, which: str) -> torch.Tensor:
        """The input vector of <start> or <end>, [hidden]."""
        return getattr(self, which) * self.scale

    def forward(self, base: torch.Tensor, thought: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixed hidden (1 - w)·base + w·thought, and w [..., 1]."""
        w = self.mlp(torch.cat([base, thought], dim=-1).to(self.mlp[0].weight.dtype))
        if bool(self.sigmoid):
            w = torch.sigmoid(w)
        w = w.to(base.dtype)
        return (1 - w) * base + w * thought, w


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP / accelerate wrapper."""
    return getattr(module, "module", module)


def new_head(model, tokenizer, *, scale: float = 100.0, mixing: str = "unbounded",
             n_ahead: int = 12, random_thoughts: bool = False) -> QSHead:
    """A fresh head for `model`, meta vectors initialised from the embedding of "---"."""
    raw = unwrap(model)
    emb = raw.get_input_embeddings().weight
    ids = [i for i in tokenizer.encode(META_INIT_TEXT, add_special_tokens=False) if i < emb.shape[0]]
    init = emb[ids].mean(0) if ids else torch.zeros(emb.shape[1])
    head = QSHead(emb.shape[1], init, scale=scale, mixing=mixing, n_ahead=n_ahead,
                  random_thoughts=random_thoughts)
    return head.to(emb.device, emb.dtype)


def load_head(checkpoint_folder: str | Path, model) -> QSHead:
    """The trained head saved with a run checkpoint (`<folder>/extra_qs_head.safetensors`)."""
    from safetensors.torch import load_file

    from lab.checkpoint import verify_checkpoint
    path = Path(checkpoint_folder) / f"extra_{HEAD_NAME}.safetensors"
    if not path.exists():
        raise LabError(f"{path} does not exist: this checkpoint was not trained with Quiet-STaR "
                       "(or predates its mixing head).")
    verify_checkpoint(checkpoint_folder, (path.name,))
    return head_from_state(load_file(str(path)), model, where=str(path))


def head_from_state(state: dict[str, torch.Tensor], model, where: str = "the head state") -> QSHead:
    emb = unwrap(model).get_input_embeddings().weight
    hidden = emb.shape[1]
    if state["start"].numel() != hidden:
        raise LabError(f"{where} holds a head for hidden size {state['start'].numel()}, but the "
                       f"model has hidden size {hidden}: load the model of the same run.")
    state.setdefault("n_ahead", torch.tensor(QuietSTaRParams.n_ahead))   # older checkpoints
    state.setdefault("random_thoughts", torch.tensor(False))
    head = QSHead(hidden, scale=float(state["scale"]), n_ahead=int(state["n_ahead"]),
                  mixing="sigmoid" if bool(state["sigmoid"]) else "unbounded")
    head.load_state_dict(state)
    return head.to(emb.device, emb.dtype)


def n_vocab_of(model, tokenizer) -> int:
    """Sampleable ids: the tokenizer's (lm_head may have padding rows beyond it)."""
    return min(len(tokenizer), unwrap(model).get_output_embeddings().weight.shape[0])
