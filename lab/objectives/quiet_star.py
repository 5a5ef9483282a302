"""Quiet-STaR (objectives.md §1): a thought after every token, generated for all positions in
parallel, and a mixing head that decides how much the post-thought prediction counts.

How the thoughts are computed (and why this route)
--------------------------------------------------
Pass 0 is one ordinary causal forward over the text (base hidden states and logits), run once
and shared by the `n_passes` thoughts: its key/value cache is repeated along the batch, so the
thought passes run on a batch of B·n_passes rows (row b·P + i = thought i of sample b). Then
`n_ahead + n_ahead_talk - 2` passes each feed ONE token per position, reusing the cache of all
earlier passes, with a float additive 4D mask [B·P, 1, n_pos, L + k·n_pos]: position t in pass
k sees the text x_≤t and its own earlier thought tokens (one diagonal block per pass), and has
position id t + k (t counted over non-padding tokens). Feeding order per position t:

    pass 1: <start>   passes 2..S+1: the S = n_ahead - 3 sampled tokens   pass S+2: <end>
    passes S+3..: x_{t+1}, x_{t+2}, ... (teacher forcing)

Outputs used: passes 1..S give the sampling logits of thought tokens 1..S; pass S+2 (after
<end>) and the teacher-forced passes give the post-thought states for talk steps j = 0..
n_ahead_talk-1, where step j mixes with the base state at t+j and predicts x_{t+j+1}.

Every pass is gradient-bearing: the mixed NLL must reach the thought key/values, and the
policy term needs log π of the sampled tokens. The spec's alternative (sample everything
without gradient, then one gradient-bearing forward over text + all thought tokens) gives the
same gradients (sampled ids are detached either way) but costs strictly more: the same
1 + P·(n_ahead + n_ahead_talk - 2) gradient-bearing token sweeps, PLUS 1 + P·(n_ahead - 3)
no-grad sampling sweeps, and one dense score matrix over all (1 + P·(n_ahead + n_ahead_talk
- 2))·L tokens instead of the per-pass L × (L + k·L) blocks. So this module uses the
incremental route: 29 sweeps per sequence at the defaults (official code: 30, plus logits it
throws away).

Memory: autograd keeps the activations of all the sweeps and each pass's grown key/value
cache, so a sequence costs about 29× an NTP sequence (measured: SmolLM2-135M, 1 × 59 tokens,
about 5 GB peak on CPU). Use a small micro-batch with grad_accum.

Work avoided: the base pass is not duplicated per thought; positions that cannot have
n_ahead_talk true tokens after them (the last n_ahead_talk) get no thought at all (n_pos =
L - n_ahead_talk); lm_head runs only for the base pass, the S sampling passes and the mixed
states at valid positions (logits_to_keep=<empty> elsewhere).

FLOPs (lab/flops.py): pass 0 as an NTP step, plus each thought pass k as a gradient-bearing
sweep over B·P·n_pos tokens at context L + k·n_pos (the key columns its dense mask spans).

Meta-tokens are not vocabulary rows: they are two vectors in the `qs_head` module (fed as
inputs_embeds), so lm_head can never produce them and checkpoints stay plain HF models. Vocab
rows beyond len(tokenizer) (padding rows some models have) are excluded from sampling.

Forking mask (cfg.rho < 1, §4): the top-rho positions by base entropy over the micro-batch
are selected once; the base NLL averages over them, and the mixed NLL over the thoughts
inserted at those positions (the thought after x_t, whose first talk target x_{t+1} is the
forking token). The policy term keeps every valid position.

Record conventions (tables `tokens` and `thoughts`): a thought row's `position` is the index of
the token it is trying to predict (the thought was inserted after x_{position-1}), the same
convention as `tokens` (row t = token x_t and the distribution that predicted it) and as RLP
and RPT, so the tables join on (run_id, step, sample, position).
"""
from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from lab import profiling
from lab.entropy import entropy_stats, forking_mask, masked_mean, nll_and_entropy
from lab.errors import LabError
from lab.flops import train_flops
from lab.objectives.base import Objective, StepOutput
from lab.records import sequence_records, token_texts
from lab.sampling import sample_rows, uniform

HEAD_NAME = "qs_head"            # extra module name: checkpoints hold extra_qs_head.safetensors
META_INIT_TEXT = "---"           # meta-tokens start from this token's embedding (official code)
MIXINGS = ("unbounded", "sigmoid")
SIGMOID_START_W = 0.01           # the sigmoid head cannot start at exactly w = 0


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


# ---- the trainable extras: mixing head + meta-token vectors ---------------------------------

class QSHead(nn.Module):
    """Mixing head MLP on [h_base, h_thought] and the <start>/<end> input vectors.

    The meta vectors are stored divided by `scale` and multiplied by it when used (official
    code: an effective ×scale learning rate). `scale`, the mixing kind and the trained n_ahead
    are buffers, so the safetensors file alone rebuilds the head (`load_head`)."""

    def __init__(self, hidden: int, init: torch.Tensor | None = None, *, scale: float = 100.0,
                 mixing: str = "unbounded", n_ahead: int = 12) -> None:
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


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP / accelerate wrapper."""
    return getattr(module, "module", module)


def new_head(model, tokenizer, *, scale: float = 100.0, mixing: str = "unbounded",
             n_ahead: int = 12) -> QSHead:
    """A fresh head for `model`, meta vectors initialised from the embedding of "---"."""
    raw = _unwrap(model)
    emb = raw.get_input_embeddings().weight
    ids = [i for i in tokenizer.encode(META_INIT_TEXT, add_special_tokens=False) if i < emb.shape[0]]
    init = emb[ids].mean(0) if ids else torch.zeros(emb.shape[1])
    head = QSHead(emb.shape[1], init, scale=scale, mixing=mixing, n_ahead=n_ahead)
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
    return _head_from_state(load_file(str(path)), model, where=str(path))


def _head_from_state(state: dict[str, torch.Tensor], model, where: str = "the head state") -> QSHead:
    emb = _unwrap(model).get_input_embeddings().weight
    hidden = emb.shape[1]
    if state["start"].numel() != hidden:
        raise LabError(f"{where} holds a head for hidden size {state['start'].numel()}, but the "
                       f"model has hidden size {hidden}: load the model of the same run.")
    state.setdefault("n_ahead", torch.tensor(QuietSTaRParams.n_ahead))
    head = QSHead(hidden, scale=float(state["scale"]), n_ahead=int(state["n_ahead"]),
                  mixing="sigmoid" if bool(state["sigmoid"]) else "unbounded")
    head.load_state_dict(state)
    return head.to(emb.device, emb.dtype)


# ---- masks and passes -----------------------------------------------------------------------

def thought_mask(attention_mask: torch.Tensor, n_pos: int, n_blocks: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """Float additive mask [B, 1, n_pos, L + n_blocks·n_pos] for the thought passes.

    Query t (a thought position, t < n_pos) may see text keys j <= t that are not padding
    (and always itself, so no row is empty), and in each thought block only its own column.
    Pass k uses the first L + k·n_pos key columns."""
    B, L = attention_mask.shape
    dev = attention_mask.device
    t = torch.arange(n_pos, device=dev)[:, None]
    j = torch.arange(L, device=dev)[None, :]
    text = (j <= t) & (attention_mask[:, None, :].bool() | (j == t))           # [B, n_pos, L]
    own = torch.eye(n_pos, dtype=torch.bool, device=dev).expand(B, n_pos, n_pos)
    allowed = torch.cat([text] + [own] * n_blocks, dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


@contextlib.contextmanager
def _last_hidden(raw_model) -> Iterator[list[torch.Tensor]]:
    """Capture the backbone's last_hidden_state (after the final norm) while the full model is
    called, so forwards go through the (possibly accelerate-wrapped) model and lm_head runs
    only where asked (logits_to_keep). output_hidden_states is not used: for GPT-2 its last
    entry is not the final-norm state in transformers 5.23."""
    box: list[torch.Tensor] = []
    handle = raw_model.base_model.register_forward_hook(lambda mod, args, out: box.append(out[0]))
    try:
        yield box
    finally:
        handle.remove()


_NO_LOGITS = torch.zeros(0, dtype=torch.long)


def _forward(model, raw_model, *, logits: bool, **kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(final-norm hidden [B, T, h], logits [B, T, V] or None) for one call of the model."""
    with _last_hidden(raw_model) as box:
        out = model(**kwargs, use_cache=True,
                    logits_to_keep=0 if logits else _NO_LOGITS.to(kwargs["position_ids"].device))
    return box[-1], (out.logits if logits else None)


@dataclass
class Thoughts:
    """What one set of parallel thought passes produced (P = n_passes, S = n_ahead - 3)."""
    base_hidden: torch.Tensor          # [B, L, h] pass 0, final norm
    base_logits: torch.Tensor          # [B, L, V]
    thought_ids: torch.Tensor          # [B, P, n_pos, S] sampled (or forced / random) tokens
    policy_logp: torch.Tensor | None   # [B, P, n_pos, S] log π(token) at reinforce temperature
    talk_hidden: torch.Tensor          # [n_talk, B, P, n_pos, h] post-thought states
    n_sweeps: int                      # thought passes run (each over B·P·n_pos tokens)
    pass_hidden: list[torch.Tensor] | None = None  # [B·P, n_pos, h] per pass (keep_all=True)


@profiling.timed("qs.run_thoughts")
def run_thoughts(model, head: QSHead, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                 n_pos: int, n_ahead: int, n_talk: int, n_passes: int, n_vocab: int,
                 sample_temperature: float = 1.0, reinforce_temperature: float | None = None,
                 generator: torch.Generator | None = None, corrupted: bool = False,
                 thought_ids: torch.Tensor | None = None, keep_all: bool = False) -> Thoughts:
    """Pass 0 plus the n_ahead + n_talk - 2 thought passes for positions 0..n_pos-1.

    Thought tokens are sampled at `sample_temperature` from the first `n_vocab` logits (rows
    past the tokenizer are never sampled), or taken from `thought_ids` [B, P, n_pos, S], or
    drawn uniformly when `corrupted` (the scaffolding control, §5; no sampling logits are then
    computed). With `reinforce_temperature`, log π of each token at that temperature is kept
    with its graph for the policy term. Teacher forcing needs n_pos + n_talk - 1 <= L."""
    raw = _unwrap(model)
    B, L = input_ids.shape
    P, S, K = n_passes, n_ahead - 3, n_ahead + n_talk - 2
    assert n_pos >= 1 and n_pos + n_talk - 1 <= L and S >= 0
    dev = input_ids.device
    from transformers import DynamicCache
    cache = DynamicCache()
    text_pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # = t unless left-padded
    base_hidden, base_logits = _forward(model, raw, logits=True, input_ids=input_ids,
                                        attention_mask=attention_mask, past_key_values=cache,
                                        position_ids=text_pos)
    if P > 1:
        cache.batch_repeat_interleave(P)  # the base keys/values stay in the graph
    emb = raw.get_input_embeddings()
    dtype = base_hidden.dtype
    mask = thought_mask(attention_mask, n_pos, K, dtype).repeat_interleave(P, dim=0)
    pos = text_pos[:, :n_pos].repeat_interleave(P, dim=0)
    rows = input_ids.repeat_interleave(P, dim=0)                              # [B·P, L]
    meta = {w: _unwrap(head).meta(w).to(dtype).expand(B * P, n_pos, -1) for w in ("start", "end")}

    tokens: list[torch.Tensor] = []
    logps: list[torch.Tensor] = []
    talk: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    for k in range(1, K + 1):
        if k == 1:
            x = meta["start"]
        elif k <= S + 1:
            x = emb(tokens[k - 2])
        elif k == S + 2:
            x = meta["end"]
        else:                                            # x_{t+j} for talk step j = k - S - 2
            j = k - S - 2
            x = emb(rows[:, j:j + n_pos])
        sampling = k <= S and thought_ids is None and not corrupted
        hidden, logits = _forward(model, raw, logits=sampling, inputs_embeds=x,
                                  attention_mask=mask[..., :L + k * n_pos],
                                  position_ids=pos + k, past_key_values=cache)
        if keep_all:
            kept.append(hidden)
        if k <= S:
            if thought_ids is not None:
                tok = thought_ids[:, :, :, k - 1].reshape(B * P, n_pos)
            elif corrupted:
                tok = (uniform((B * P, n_pos), dev, generator) * n_vocab).long().clamp_(max=n_vocab - 1)
            else:
                logits = logits[..., :n_vocab]
                with torch.no_grad():
                    tok = sample_tokens(logits, sample_temperature, generator)
                if reinforce_temperature is not None:
                    lp = torch.log_softmax(_scaled(logits, reinforce_temperature), dim=-1)
                    logps.append(lp.gather(-1, tok[..., None])[..., 0])
            tokens.append(tok)
        if k >= S + 2:
            talk.append(hidden)

    def per_sample(x: torch.Tensor) -> torch.Tensor:   # [B·P, n_pos, ...] -> [B, P, n_pos, ...]
        return x.view(B, P, *x.shape[1:])
    ids_out = (per_sample(torch.stack(tokens, -1)) if tokens
               else torch.zeros(B, P, n_pos, 0, dtype=torch.long, device=dev))
    profiling.count("generated_tokens", ids_out.numel())
    return Thoughts(base_hidden=base_hidden, base_logits=base_logits, thought_ids=ids_out,
                    policy_logp=per_sample(torch.stack(logps, -1)) if logps else None,
                    talk_hidden=torch.stack([per_sample(h) for h in talk]), n_sweeps=K,
                    pass_hidden=kept if keep_all else None)


def sample_tokens(logits: torch.Tensor, temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of logits [..., V] at `temperature` (lab.sampling, inverse CDF)."""
    probs = torch.softmax(_scaled(logits, temperature), dim=-1)
    return sample_rows(probs.reshape(-1, probs.shape[-1]), generator).view(probs.shape[:-1])


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def thought_rewards(logp_sum: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """r_i = Σ_k log p_mixed(x_{t+k+1} | thought i) minus the mean over the position's
    thoughts (along `dim`), clamped at >= 0 and detached: only better-than-average thoughts
    are reinforced. With one thought per position every reward is 0."""
    x = logp_sum.detach()
    return (x - x.mean(dim=dim, keepdim=True)).clamp(min=0)


def talk_windows(x: torch.Tensor, n_pos: int, n_talk: int, offset: int = 0) -> torch.Tensor:
    """Stack x[:, j+offset : j+offset+n_pos] for talk steps j: [B, T, ...] -> [n_talk, B, n_pos, ...].
    offset 0 on hidden states gives the base state at t+j; offset 1 on ids gives x_{t+j+1}."""
    return torch.stack([x[:, j + offset:j + offset + n_pos] for j in range(n_talk)])


# ---- the objective --------------------------------------------------------------------------

class QuietSTaR(Objective):
    name = "quiet-star"
    Params = QuietSTaRParams
    description = ("Quiet-STaR: a sampled thought after every token, in parallel; a mixing head "
                   "blends post-thought and base predictions; REINFORCE on helpful thoughts.")

    def __init__(self, model, tokenizer, params, cfg, device: torch.device) -> None:
        if isinstance(params, dict):
            params = QuietSTaRParams(**params)
        problems = params.problems(cfg)
        if problems:
            raise LabError("Invalid Quiet-STaR settings:\n- " + "\n- ".join(problems))
        super().__init__(model, tokenizer, params, cfg, device)
        raw = _unwrap(model)
        _require_decoder_only(raw)
        self.n_vocab = _n_vocab(raw, tokenizer)
        self.qs_head = new_head(raw, tokenizer, scale=params.meta_lr_scale, mixing=params.mixing,
                                n_ahead=params.n_ahead)
        check_supported(raw, self.qs_head, self.n_vocab)
        max_pos = _max_positions(raw)
        needed = getattr(cfg, "seq_len", 0) + params.n_ahead - 3
        if max_pos and needed > max_pos:
            raise LabError(f"Quiet-STaR needs position ids up to seq_len + n_ahead - 3 = {needed}, "
                           f"but the model supports {max_pos}: lower seq_len or n_ahead.")

    def extra_modules(self) -> dict[str, nn.Module]:
        return {HEAD_NAME: self.qs_head}

    def step(self, batch: dict[str, torch.Tensor], *, record: int) -> StepOutput:
        p, ids, attn = self.params, batch["input_ids"], batch["attention_mask"]
        B, L = ids.shape
        P, n_talk = p.n_passes, p.n_ahead_talk
        n_pos = L - n_talk            # positions with n_talk true tokens after them
        if n_pos < 1:
            raise LabError(f"Sequences of {L} tokens are too short for n_ahead_talk={n_talk}.")
        th = run_thoughts(self.model, self.qs_head, ids, attn, n_pos=n_pos, n_ahead=p.n_ahead,
                          n_talk=n_talk, n_passes=P, n_vocab=self.n_vocab,
                          sample_temperature=p.sample_temperature,
                          reinforce_temperature=p.reinforce_temperature)

        # Base prediction: exactly the NTP computation.
        logits = th.base_logits[:, :-1]
        valid = attn[:, 1:].bool()
        base_nll, ent = nll_and_entropy(logits, ids[:, 1:])   # one log-softmax for both
        selected = forking_mask(ent, valid, self.cfg.rho)
        base_loss = masked_mean(base_nll, selected)

        # Talk steps at the N positions whose n_talk targets are all real tokens.
        ok = attn.bool().unfold(1, n_talk + 1, 1).all(-1)                      # [B, n_pos]
        base_h = talk_windows(th.base_hidden, n_pos, n_talk)[:, ok]            # [n_talk, N, h]
        post_h = th.talk_hidden.transpose(2, 3)[:, ok]                         # [n_talk, N, P, h]
        mixed, w = self.qs_head(base_h[:, :, None].expand_as(post_h), post_h)
        mixed_logits = _unwrap(self.model).get_output_embeddings()(mixed)      # [n_talk, N, P, V]
        targets = talk_windows(ids, n_pos, n_talk, offset=1)[:, ok]            # [n_talk, N]
        mixed_nll = F.cross_entropy(mixed_logits.float().flatten(0, 2),
                                    targets[:, :, None].expand(-1, -1, P).reshape(-1),
                                    reduction="none").view(n_talk, -1, P)
        sel = selected[:, :n_pos][ok]                                          # [N]
        mixed_loss = masked_mean(mixed_nll.mean(dim=(0, 2)), sel)

        # REINFORCE on the sampled tokens of better-than-average thoughts.
        reward = thought_rewards(-mixed_nll.sum(0))                            # [N, P]
        if th.policy_logp is not None and reward.numel():
            logp = th.policy_logp.transpose(1, 2)[ok]                          # [N, P, S]
            policy = -(reward[..., None] * logp).mean()
        else:
            policy = base_loss.new_zeros(())
        loss = 0.5 * base_loss + 0.5 * mixed_loss + p.policy_weight * policy

        with torch.no_grad():
            base_talk = talk_windows(base_nll, n_pos, n_talk)[:, ok]           # [n_talk, N]
            gain = (base_talk[..., None] - mixed_nll).mean() if sel.numel() else torch.tensor(0.)
            metrics = {"loss/base_nll": base_loss.item(), "loss/mixed_nll": mixed_loss.item(),
                       "loss/policy": policy.item() + 0.0, "reward/mean": _mean(reward),
                       "reward/std": reward.float().std().item() if reward.numel() > 1 else 0.0,
                       "mix/w_mean": _mean(w), "mix/nll_gain": gain.item(),
                       "thought/length": float(p.n_ahead - 3),
                       "nll": masked_mean(base_nll, valid).item(),
                       "selected_share": selected.float().sum().item() / max(valid.sum().item(), 1),
                       **entropy_stats(ent, valid)}
        tokens = int(attn.sum())
        flops = train_flops(self.desc, tokens, L) + sum(
            train_flops(self.desc, B * P * n_pos, L + k * n_pos) for k in range(1, th.n_sweeps + 1))
        out = StepOutput(loss=loss, metrics=metrics, tokens=tokens, flops=flops)
        if record > 0:
            self._record(out, min(record, B), ids, th, ok, base_nll, mixed_nll, mixed_logits,
                         w, reward, targets)
        return out

    @torch.no_grad()
    def _record(self, out: StepOutput, n: int, ids, th: Thoughts, ok, base_nll, mixed_nll,
                mixed_logits, w, reward, targets) -> None:
        """Token rows (base prediction, with w / mixed NLL of the thoughts that predicted each
        token in `extra`) and one thought row per (position, thought) for the first n sequences."""
        tok = self.tokenizer
        where = ok.nonzero().tolist()                                          # N rows (b, t)
        # one device->host copy of everything (no per-value .item() syncs on a GPU)
        logp_sum = -mixed_nll.sum(0)
        raw_reward = (logp_sum - logp_sum.mean(-1, keepdim=True)).tolist()    # [N][P]
        talk_nll = mixed_nll.permute(1, 2, 0).tolist()                         # [N][P][n_talk]
        talk_w = w[..., 0].permute(1, 2, 0).tolist()                           # [N][P][n_talk]
        reward_l, base_l = reward.tolist(), base_nll.tolist()
        pred = mixed_logits[0].argmax(-1).tolist()                             # [N][P]
        target_l = targets[0].tolist()
        thought_ids = th.thought_ids[:n].tolist()                              # [n][P][n_pos][S]
        n_talk = mixed_nll.shape[0]
        for s in range(n):
            rows = [(r, t) for r, (b, t) in enumerate(where) if b == s]
            extras: list[dict] = [{} for _ in range(ids.shape[1])]
            for r, t in rows:
                extras[t + 1] = {"w": sum(x[0] for x in talk_w[r]) / len(talk_w[r]),
                                 "mixed_nll": sum(x[0] for x in talk_nll[r]) / len(talk_nll[r])}
            out.token_records += sequence_records(tok, ids[s], th.base_logits[s], sample=s,
                                                  extra=extras)
            for r, t in rows:
                for i in range(len(raw_reward[r])):
                    tids = thought_ids[s][i][t]
                    out.thought_records.append({
                        "sample": s, "position": t + 1, "idx": i, "kind": "quiet-star",
                        "text": tok.decode(tids, clean_up_tokenization_spaces=False),
                        "n_tokens": len(tids), "reward": reward_l[r][i], "advantage": None,
                        "weight": talk_w[r][i][0], "base_nll": base_l[s][t],
                        "mixed_nll": talk_nll[r][i][0], "prediction": _text(tok, pred[r][i]),
                        "target": _text(tok, target_l[r]),
                        "extra": {"after": t, "raw_reward": raw_reward[r][i],
                                  "talk_mixed_nll": talk_nll[r][i], "talk_w": talk_w[r][i],
                                  "talk_base_nll": base_l[s][t:t + n_talk],
                                  "tokens": token_texts(tok, tids)}})


def _mean(x: torch.Tensor) -> float:
    return x.float().mean().item() if x.numel() else 0.0


def _max_positions(raw_model) -> int | None:
    cfg = raw_model.config
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


# ---- support check --------------------------------------------------------------------------

def _model_words(raw_model) -> str:
    return (f"{raw_model.config.model_type} "
            f"({getattr(raw_model.config, '_attn_implementation', '?')} attention)")


def _require_decoder_only(raw_model) -> None:
    if getattr(raw_model.config, "is_encoder_decoder", False) or \
            raw_model.get_output_embeddings() is None:
        raise LabError(f"Quiet-STaR needs a decoder-only causal LM with an lm_head; "
                       f"{_model_words(raw_model)} is not one.")


@torch.no_grad()
def check_supported(model, head: QSHead, n_vocab: int) -> None:
    """Raise LabError unless the parallel-thought passes reproduce a plain sequential forward on
    this model (custom 4D masks, position ids and cache honoured) and lm_head(final hidden)
    gives the model's logits. A few tiny forwards: cheap enough to run on every construction."""
    raw = _unwrap(model)
    _require_decoder_only(raw)
    what = _model_words(raw)
    was_training = raw.training
    raw.eval()
    try:
        ids = (torch.arange(4, device=head.start.device)[None] * 7 + 11) % n_vocab
        forced = torch.full((1, 1, 3, 1), 5 % n_vocab, device=ids.device)
        th = run_thoughts(raw, head, ids, torch.ones_like(ids), n_pos=3, n_ahead=4, n_talk=2,
                          n_passes=1, n_vocab=n_vocab, thought_ids=forced, keep_all=True)
        emb = raw.get_input_embeddings()
        t = 1   # reference: [x0, x1, <start>, tok, <end>, x2] at positions 0..5
        seq = torch.cat([emb(ids[:, :t + 1]), head.meta("start")[None, None], emb(forced[:, 0, t]),
                         head.meta("end")[None, None], emb(ids[:, t + 1:t + 2])], dim=1)
        with _last_hidden(raw) as box:
            ref_logits = raw(inputs_embeds=seq.to(th.base_hidden.dtype)).logits
        ref = box[-1][0, t:]
        got = torch.stack([th.base_hidden[0, t]] + [h[0, t] for h in th.pass_hidden])
        tol = 1e-3 if ref.dtype == torch.float32 else 5e-2
        err = (got.float() - ref.float()).abs().max().item() / (1 + ref.float().abs().max().item())
        head_err = (raw.get_output_embeddings()(ref) - ref_logits[0, t:]).abs().max().item()
    except Exception as e:  # noqa: BLE001 - any failure means this architecture is unsupported
        raise LabError(f"Quiet-STaR does not support {what}: the parallel-thought forward "
                       f"failed ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}). "
                       "It needs a decoder-only HF model accepting past_key_values, a 4D attention "
                       "mask, position_ids and inputs_embeds (e.g. Llama, Qwen2, GPT-2 with eager "
                       "or sdpa attention).") from e
    finally:
        raw.train(was_training)
    if err > tol:
        raise LabError(f"Quiet-STaR does not support {what}: with a custom 4D mask the thought "
                       f"passes differ from a plain forward (relative error {err:.2g}); the "
                       "attention implementation probably ignores custom masks. Use eager or "
                       "sdpa attention.")
    if head_err > tol * (1 + ref_logits.abs().max().item()):
        raise LabError(f"Quiet-STaR does not support {what}: its logits are not lm_head of the "
                       "final hidden state (logit scaling or soft-capping), so mixed predictions "
                       "would be wrong.")


# ---- inference with thoughts ----------------------------------------------------------------

_HEADS: "weakref.WeakKeyDictionary[nn.Module, QSHead]" = weakref.WeakKeyDictionary()


def _head_of(loaded) -> QSHead:
    """The head saved next to a run checkpoint's weights (the folder the model was loaded
    from), loaded once per model object."""
    model = loaded.model
    if model not in _HEADS:
        folder = getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "")
        if not folder or not Path(folder).is_dir():
            raise LabError(f"Thought inference needs a Quiet-STaR checkpoint (run:<id>); "
                           f"{loaded.spec!r} was not loaded from a checkpoint folder.")
        _HEADS[model] = load_head(folder, model)
    return _HEADS[model]


def _as_head(head: QSHead | dict[str, torch.Tensor], model) -> QSHead:
    if isinstance(head, QSHead):
        return head.to(_unwrap(model).get_input_embeddings().weight.device)
    return _head_from_state(dict(head), model)


@torch.no_grad()
def _predict(model, head: QSHead, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
             n_vocab: int, n_ahead: int | None, n_passes: int, temperature: float,
             generator: torch.Generator | None, corrupted: bool):
    """Thoughts at every position, and the mixed next-token logits [B, P, T, V] with w."""
    raw = _unwrap(model)
    was_training = raw.training
    raw.eval()
    try:
        th = run_thoughts(raw, head, input_ids, attention_mask, n_pos=input_ids.shape[1],
                          n_ahead=n_ahead or int(head.n_ahead), n_talk=1, n_passes=n_passes,
                          n_vocab=n_vocab, sample_temperature=temperature, generator=generator,
                          corrupted=corrupted)
    finally:
        raw.train(was_training)
    post = th.talk_hidden[0]                                                   # [B, P, T, h]
    mixed, w = head(th.base_hidden[:, None].expand_as(post), post)
    return th, raw.get_output_embeddings()(mixed), w


@torch.no_grad()
def think(loaded, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, corrupt: bool = False,
          generator: torch.Generator | None = None, head: QSHead | None = None,
          n_ahead: int | None = None, n_passes: int = 1, temperature: float = 1.0) -> torch.Tensor:
    """Mixed next-token logits [B, T, V] at every position, each position having thought first
    (the evaluation contract of docs/evaluation.md). `loaded` is a lab.models.LoadedModel of a
    Quiet-STaR run checkpoint; its head is read from the checkpoint folder unless given.
    Batches may be left- or right-padded: positions come from the attention mask. `corrupt`
    replaces each thought by uniformly random tokens of the same length (§5 control).
    n_ahead defaults to the one the head was trained with; with n_passes > 1 the result is
    the log of the mean mixed probability over the thoughts."""
    head = head if head is not None else _head_of(loaded)
    n_vocab = _n_vocab(loaded.model, loaded.tokenizer)
    _, logits, _ = _predict(loaded.model, head, input_ids, attention_mask, n_vocab=n_vocab,
                            n_ahead=n_ahead, n_passes=n_passes, temperature=temperature,
                            generator=generator, corrupted=corrupt)
    if n_passes == 1:
        return logits[:, 0]
    return torch.logsumexp(torch.log_softmax(logits.float(), -1), dim=1) - math.log(n_passes)


@torch.no_grad()
def think_text(model, tokenizer, head: QSHead | dict[str, torch.Tensor], text: str, *,
               n_passes: int = 2, n_ahead: int | None = None, temperature: float = 1.0,
               seed: int = 0, corrupted: bool = False, max_tokens: int = 512) -> list[dict[str, Any]]:
    """Think after every token of `text` and report, per position, the thoughts and how they
    change the next-token prediction (for pages and notebooks).

    One dict per text token x_t (t = 0..L-1): `position` = t + 1 (index of the predicted token,
    the records' convention), `after` (text of x_t), `target` (text of x_{t+1}; None at the
    end), `base_prob` / `mixed_prob` (probability of the target without / with the thought,
    mixed averaged over thoughts), `base_top` (base argmax), `w` (mean mixing weight) and
    `thoughts`: [{"text", "n_tokens", "w", "mixed_prob", "prediction"}]. `head` is a QSHead or
    its state dict (`load_head` reads one from a checkpoint); n_ahead defaults to the trained
    one. `corrupted=True` replaces each thought by uniformly random tokens of the same length
    (§5 control); the same seed gives the same thoughts. Meta-tokens never appear."""
    raw = _unwrap(model)
    head = _as_head(head, raw)
    dev = raw.get_input_embeddings().weight.device
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_tokens].to(dev)
    if ids.shape[1] == 0:
        raise LabError("Nothing to think about: the text is empty.")
    n_vocab = _n_vocab(raw, tokenizer)
    th, logits, w = _predict(raw, head, ids, torch.ones_like(ids), n_vocab=n_vocab, n_ahead=n_ahead,
                             n_passes=n_passes, temperature=temperature,
                             generator=torch.Generator(device=dev).manual_seed(seed),
                             corrupted=corrupted)
    mixed_p = torch.softmax(logits[0].float()[..., :n_vocab], -1).cpu()       # [P, L, V]
    base_p = torch.softmax(th.base_logits[0].float()[..., :n_vocab], -1).cpu()  # [L, V]
    w = w[0, :, :, 0].cpu()                                                      # [P, L]
    thought_ids = th.thought_ids[0].tolist()                                     # [P][L][S]
    L, ids_l = ids.shape[1], ids[0].tolist()
    texts = token_texts(tokenizer, ids_l)
    out = []
    for t in range(L):
        nxt = ids_l[t + 1] if t + 1 < L else None
        thoughts = [{"text": tokenizer.decode(thought_ids[i][t], clean_up_tokenization_spaces=False),
                     "n_tokens": len(thought_ids[i][t]), "w": w[i, t].item(),
                     "mixed_prob": mixed_p[i, t, nxt].item() if nxt is not None else None,
                     "prediction": _text(tokenizer, int(mixed_p[i, t].argmax()))}
                    for i in range(n_passes)]
        out.append({"position": t + 1, "after": texts[t],
                    "target": texts[t + 1] if nxt is not None else None,
                    "base_prob": base_p[t, nxt].item() if nxt is not None else None,
                    "mixed_prob": mixed_p[:, t, nxt].mean().item() if nxt is not None else None,
                    "base_top": _text(tokenizer, int(base_p[t].argmax())),
                    "w": w[:, t].mean().item(), "thoughts": thoughts})
    return out


def _n_vocab(model, tokenizer) -> int:
    """Sampleable ids: the tokenizer's (lm_head may have padding rows beyond it)."""
    return min(len(tokenizer), _unwrap(model).get_output_embeddings().weight.shape[0])


def _text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
