"""Quiet-STaR's thought passes (objectives.md §1): all thinking positions think in parallel.

How the thoughts are computed (and why this route)
--------------------------------------------------
Pass 0 is one ordinary causal forward over the text (base hidden states and logits), run once
and shared by the `n_passes` thoughts: its key/value cache is repeated along the batch, so the
thought passes run on a batch of B·n_passes rows (row b·P + i = thought i of sample b). Then
`n_ahead + n_ahead_talk - 2` passes each feed ONE token per position, reusing the cache of all
earlier passes, with a float additive 4D mask [B·P, 1, n_pos, L + k·n_pos]: position t in pass
k sees the text x_≤t and its own earlier thought tokens (one diagonal block per pass), and has
position id t + k (t counted over non-padding tokens). The thinking positions are "thought
slots" [R, M]: every position 0..n_pos-1 of every row (R = B, M = n_pos), or only chosen ones
(forking mode, `pack_positions`: rows of M slots, a text row that chose more than M spread
over several thought rows, each reading its own copy of that row's cache); the
passes and their masks are R·M wide, so their cost scales with the share that thinks.
Feeding order per position t:

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
sweep over B·P·M tokens at context L + k·M (the key columns its dense mask spans).

Meta-tokens are not vocabulary rows: they are two vectors in the `qs_head` module (fed as
inputs_embeds), so lm_head can never produce them and checkpoints stay plain HF models. Vocab
rows beyond len(tokenizer) (padding rows some models have) are excluded from sampling.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from lab import profiling
from lab.errors import LabError
from lab.objectives.quiet_star.head import QSHead, unwrap
from lab.progress import step_note
from lab.sampling import sample_rows, uniform


def thought_mask(attention_mask: torch.Tensor, positions: torch.Tensor, n_blocks: int,
                 dtype: torch.dtype) -> torch.Tensor:
    """Float additive mask [B, 1, M, L + n_blocks·M] for the thought passes of the M thought
    slots per row, slot m thinking after token t = positions[b, m].

    Slot m may see text keys j <= t that are not padding (and always x_t itself, so no row
    is empty), and in each thought block only its own column. Pass k uses the first
    L + k·M key columns."""
    B, L = attention_mask.shape
    M = positions.shape[1]
    dev = attention_mask.device
    t = positions[:, :, None]
    j = torch.arange(L, device=dev)[None, None, :]
    text = (j <= t) & (attention_mask[:, None, :].bool() | (j == t))           # [B, M, L]
    own = torch.eye(M, dtype=torch.bool, device=dev).expand(B, M, M)
    allowed = torch.cat([text] + [own] * n_blocks, dim=-1)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=dev)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def all_positions(batch: int, n_pos: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Thought rows [B] and slots [B, n_pos]: every position 0..n_pos-1 of every row thinks."""
    return (torch.arange(batch, device=device),
            torch.arange(n_pos, device=device).expand(batch, n_pos))


def pack_positions(chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thought rows for a boolean choice [B, n_pos] of positions that think: the text row each
    thought row belongs to [R], its slots' positions [R, M] and which slots are real [R, M].

    A row that chose more than M positions is split over several thought rows (each continues
    its own copy of that row's cache). M is the width from ceil(chosen / B) (at most 2B rows,
    so the cache copies stay within twice pass 0's) to the most any row chose (B rows) that
    needs the fewest slots R·M: the passes cost P·R·M tokens, never more than with one thought
    row per text row. Unused slots repeat the first position of their thought row: they are
    computed and ignored, and no unchosen position is ever computed."""
    B = chosen.shape[0]
    lists = [[t for t, c in enumerate(row) if c] for row in chosen.tolist()]
    counts = [len(ts) for ts in lists]
    widest = max(max(counts, default=0), 1)
    M = min(range(max(1, -(-sum(counts) // max(B, 1))), widest + 1),
            key=lambda m: (sum(-(-n // m) for n in counts) * m, -m))
    rows, positions, real = [], [], []
    for b, ts in enumerate(lists):
        for i in range(0, len(ts), M):
            chunk = ts[i:i + M]
            rows.append(b)
            positions.append(chunk + [chunk[0]] * (M - len(chunk)))
            real.append([True] * len(chunk) + [False] * (M - len(chunk)))
    if not rows:                                   # nothing chosen: one ignored slot
        rows, positions, real = [0], [[0] * M], [[False] * M]
    dev = chosen.device
    return (torch.tensor(rows, device=dev), torch.tensor(positions, device=dev),
            torch.tensor(real, device=dev))


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
class BasePass:
    """Pass 0: one causal forward over the text, shared by every thought."""
    hidden: torch.Tensor               # [B, L, h] final norm
    logits: torch.Tensor               # [B, L, V]
    cache: Any                         # its key/value cache (DynamicCache), extended by the passes
    text_pos: torch.Tensor             # [B, L] position ids (t counted over non-padding tokens)


@dataclass
class Thoughts:
    """What one set of parallel thought passes produced (P = n_passes, S = n_ahead - 3; R
    thought rows of M slots, slot m of thought row r thinking after token positions[r, m] of
    text row rows[r]; every position: R = B, rows = 0..B-1)."""
    base_hidden: torch.Tensor          # [B, L, h] pass 0, final norm
    base_logits: torch.Tensor          # [B, L, V]
    rows: torch.Tensor                 # [R] the text row of each thought row
    positions: torch.Tensor            # [R, M] the token each slot thinks after
    thought_ids: torch.Tensor          # [R, P, M, S] sampled (or forced / random) tokens
    policy_logp: torch.Tensor | None   # [R, P, M, S] log π(token) at reinforce temperature
    talk_hidden: torch.Tensor          # [n_talk, R, P, M, h] post-thought states
    n_sweeps: int                      # thought passes run (each over R·P·M tokens)
    pass_hidden: list[torch.Tensor] | None = None  # [R·P, M, h] per pass (keep_all=True)


def base_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BasePass:
    """Pass 0 with its cache (gradient-bearing): base states and logits at every position."""
    from transformers import DynamicCache
    cache = DynamicCache()
    text_pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # = t unless left-padded
    hidden, logits = _forward(model, unwrap(model), logits=True, input_ids=input_ids,
                              attention_mask=attention_mask, past_key_values=cache,
                              position_ids=text_pos)
    return BasePass(hidden, logits, cache, text_pos)


def run_thoughts(model, head: QSHead, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                 n_pos: int, n_ahead: int, n_talk: int, n_passes: int, n_vocab: int,
                 **kwargs) -> Thoughts:
    """Pass 0 plus the thought passes for every position 0..n_pos-1 (see thought_passes)."""
    base = base_pass(model, input_ids, attention_mask)
    return thought_passes(model, head, base, input_ids, attention_mask,
                          *all_positions(input_ids.shape[0], n_pos, input_ids.device),
                          n_ahead=n_ahead, n_talk=n_talk, n_passes=n_passes, n_vocab=n_vocab, **kwargs)


@profiling.timed("qs.thought_passes")
def thought_passes(model, head: QSHead, base: BasePass, input_ids: torch.Tensor,
                   attention_mask: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, *,
                   n_ahead: int,
                   n_talk: int, n_passes: int, n_vocab: int, sample_temperature: float = 1.0,
                   reinforce_temperature: float | None = None,
                   generator: torch.Generator | None = None, corrupted: bool = False,
                   thought_ids: torch.Tensor | None = None, keep_all: bool = False) -> Thoughts:
    """The n_ahead + n_talk - 2 thought passes after pass 0, for the thought slots only: thought
    row r continues text row rows[r] [R], its slot m thinks after x_t, t = positions[r, m]
    [R, M] (all_positions, pack_positions). Each pass costs R·P·M tokens, whatever L is.

    Thought tokens are sampled at `sample_temperature` from the first `n_vocab` logits (rows
    past the tokenizer are never sampled), or taken from `thought_ids` [R, P, M, S], or
    drawn uniformly when `corrupted` (the scaffolding control, §5; no sampling logits are then
    computed). With `reinforce_temperature`, log π of each token at that temperature is kept
    with its graph for the policy term. Teacher forcing needs t + n_talk - 1 < L."""
    raw = unwrap(model)
    B, L = input_ids.shape
    R, M = positions.shape
    P, S, K = n_passes, n_ahead - 3, n_ahead + n_talk - 2
    assert M >= 1 and int(positions.max()) + n_talk - 1 < L and S >= 0
    dev = input_ids.device
    cache = base.cache                    # the base keys/values stay in the graph
    if R == B and torch.equal(rows, torch.arange(B, device=rows.device)):
        if P > 1:
            cache.batch_repeat_interleave(P)
    else:                                 # thought row r·P + i reads text row rows[r]
        cache.reorder_cache(rows.repeat_interleave(P))
    emb = raw.get_input_embeddings()
    dtype = base.hidden.dtype
    mask = thought_mask(attention_mask[rows], positions, K, dtype).repeat_interleave(P, dim=0)
    slots = positions.repeat_interleave(P, dim=0)                              # [R·P, M]
    pos = base.text_pos[rows].gather(1, positions).repeat_interleave(P, dim=0)
    text = input_ids[rows].repeat_interleave(P, dim=0)                         # [R·P, L]
    meta = {w: unwrap(head).meta(w).to(dtype).expand(R * P, M, -1) for w in ("start", "end")}

    tokens: list[torch.Tensor] = []
    logps: list[torch.Tensor] = []
    talk: list[torch.Tensor] = []
    kept: list[torch.Tensor] = []
    for k in range(1, K + 1):
        step_note(f"thought pass {k}/{K} ({R * P * M} thought positions)")
        if k == 1:
            x = meta["start"]
        elif k <= S + 1:
            x = emb(tokens[k - 2])
        elif k == S + 2:
            x = meta["end"]
        else:                                            # x_{t+j} for talk step j = k - S - 2
            x = emb(text.gather(1, slots + (k - S - 2)))
        sampling = k <= S and thought_ids is None and not corrupted
        hidden, logits = _forward(model, raw, logits=sampling, inputs_embeds=x,
                                  attention_mask=mask[..., :L + k * M],
                                  position_ids=pos + k, past_key_values=cache)
        if keep_all:
            kept.append(hidden)
        if k <= S:
            if thought_ids is not None:
                tok = thought_ids[:, :, :, k - 1].reshape(R * P, M)
            elif corrupted:
                tok = (uniform((R * P, M), dev, generator) * n_vocab).long().clamp_(max=n_vocab - 1)
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

    def per_sample(x: torch.Tensor) -> torch.Tensor:   # [R·P, M, ...] -> [R, P, M, ...]
        return x.view(R, P, *x.shape[1:])
    ids_out = (per_sample(torch.stack(tokens, -1)) if tokens
               else torch.zeros(R, P, M, 0, dtype=torch.long, device=dev))
    profiling.count("generated_tokens", ids_out.numel())
    return Thoughts(base_hidden=base.hidden, base_logits=base.logits, rows=rows,
                    positions=positions, thought_ids=ids_out,
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


def talk_windows(x: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, n_talk: int,
                 offset: int = 0) -> torch.Tensor:
    """x[rows[r], t + j + offset] for each thought slot (t = positions[r, m]) and talk step j:
    [B, L, ...] -> [n_talk, R, M, ...]. offset 0 on hidden states gives the base state at
    t+j; offset 1 on ids gives the target x_{t+j+1}."""
    return torch.stack([x[rows[:, None], positions + j + offset] for j in range(n_talk)])


# ---- support check --------------------------------------------------------------------------

def _model_words(raw_model) -> str:
    return (f"{raw_model.config.model_type} "
            f"({getattr(raw_model.config, '_attn_implementation', '?')} attention)")


def require_decoder_only(raw_model) -> None:
    if getattr(raw_model.config, "is_encoder_decoder", False) or \
            raw_model.get_output_embeddings() is None:
        raise LabError(f"Quiet-STaR needs a decoder-only causal LM with an lm_head; "
                       f"{_model_words(raw_model)} is not one.")


@torch.no_grad()
def check_supported(model, head: QSHead, n_vocab: int) -> None:
    """Raise LabError unless the parallel-thought passes reproduce a plain sequential forward on
    this model (custom 4D masks, position ids and cache honoured) and lm_head(final hidden)
    gives the model's logits. A few tiny forwards: cheap enough to run on every construction."""
    raw = unwrap(model)
    require_decoder_only(raw)
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


