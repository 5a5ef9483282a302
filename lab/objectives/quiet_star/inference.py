"""Quiet-STaR inference with thoughts, for evaluation (`think`: mixed next-token logits at every
position) and the Playground (`think_text`: per-position thoughts and their effect). The heads
of loaded checkpoints are cached per model object."""
from __future__ import annotations

import math
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lab.errors import LabError
from lab.objectives.quiet_star.head import QSHead, head_from_state, load_head, n_vocab_of, unwrap
from lab.objectives.quiet_star.passes import run_thoughts
from lab.records import token_text, token_texts

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
        return head.to(unwrap(model).get_input_embeddings().weight.device)
    return head_from_state(dict(head), model)


@torch.no_grad()
def _predict(model, head: QSHead, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
             n_vocab: int, n_ahead: int | None, n_passes: int, temperature: float,
             generator: torch.Generator | None, corrupted: bool):
    """Thoughts at every position, and the mixed next-token logits [B, P, T, V] with w. A head
    trained on random thoughts (thought_content=random) always thinks random thoughts."""
    raw = unwrap(model)
    was_training = raw.training
    raw.eval()
    try:
        th = run_thoughts(raw, head, input_ids, attention_mask, n_pos=input_ids.shape[1],
                          n_ahead=n_ahead or int(head.n_ahead), n_talk=1, n_passes=n_passes,
                          n_vocab=n_vocab, sample_temperature=temperature, generator=generator,
                          corrupted=corrupted or bool(head.random_thoughts))
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
    n_vocab = n_vocab_of(loaded.model, loaded.tokenizer)
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
    raw = unwrap(model)
    head = _as_head(head, raw)
    dev = raw.get_input_embeddings().weight.device
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_tokens].to(dev)
    if ids.shape[1] == 0:
        raise LabError("Nothing to think about: the text is empty.")
    n_vocab = n_vocab_of(raw, tokenizer)
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
                     "prediction": token_text(tokenizer, int(mixed_p[i, t].argmax()))}
                    for i in range(n_passes)]
        out.append({"position": t + 1, "after": texts[t],
                    "target": texts[t + 1] if nxt is not None else None,
                    "base_prob": base_p[t, nxt].item() if nxt is not None else None,
                    "mixed_prob": mixed_p[:, t, nxt].mean().item() if nxt is not None else None,
                    "base_top": token_text(tokenizer, int(base_p[t].argmax())),
                    "w": w[:, t].mean().item(), "thoughts": thoughts})
    return out
