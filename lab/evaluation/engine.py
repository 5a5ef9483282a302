"""Batched model calls shared by the benchmarks: greedy generation, continuation
log-likelihoods and per-token NLL/entropy.

- Items are processed in order of prompt length (less padding), results returned in the
  caller's order.
- Generation: left-padded batches through `model.generate` (greedy, KV cache), with a
  per-sequence stop on strings / a regex, so a batch ends when all its rows are done.
- Log-likelihood: the question prefix of several questions runs once (left-padded, with a
  KV cache, logits only for its last position); the cache is then gathered once per choice
  and all choices of all those questions are scored in one right-padded forward.
- When a `logits_fn(input_ids, attention_mask) -> logits` is given (Quiet-STaR thought
  modes), it replaces the model: full sequences, no cache sharing, a plain greedy loop.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from lab.entropy import entropy_from_logp
from lab.evaluation.extract import cut
from lab.progress import Progress

LogitsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StopCriteria:
    """transformers StoppingCriteria: a row is done once its new text (leading whitespace
    ignored) holds a stop string or matches `regex`. Returns a bool per row.

    The text is detokenized incrementally (the prefix/read offsets of vLLM's detokenizer:
    only the last few tokens are decoded at each step, and a piece ending in a partial UTF-8
    character waits for the next token). Decoding every row's whole generation at every step
    made the check quadratic in the generated length."""

    def __init__(self, tokenizer, prompt_len: int, stops: Sequence[str], regex: str | None = None):
        self.tok, self.prompt_len, self.stops = tokenizer, prompt_len, tuple(stops)
        self.regex = re.compile(regex) if regex else None
        self.done: torch.Tensor | None = None

    def row_done(self, text: str) -> bool:
        if self.stops and len(cut(text, self.stops)) < len(text):
            return True
        return bool(self.regex and self.regex.search(text))

    def _reset(self, n: int) -> None:
        self.done = torch.zeros(n, dtype=torch.bool)
        self.texts, self.ids = [""] * n, [[] for _ in range(n)]
        self.prefix, self.read = [0] * n, [0] * n

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        if self.done is None or self.done.shape[0] != input_ids.shape[0]:
            self._reset(input_ids.shape[0])
        rows = [i for i in range(input_ids.shape[0]) if not self.done[i]]
        gen = input_ids[rows, self.prompt_len:].tolist()
        for i, g in zip(rows, gen):
            self.ids[i] += g[len(self.ids[i]):]
        before = self.tok.batch_decode([self.ids[i][self.prefix[i]:self.read[i]] for i in rows],
                                       skip_special_tokens=True)
        after = self.tok.batch_decode([self.ids[i][self.prefix[i]:] for i in rows], skip_special_tokens=True)
        for i, old, new in zip(rows, before, after):
            if len(new) > len(old) and not new.endswith("\ufffd"):
                self.texts[i] += new[len(old):]
                self.prefix[i], self.read[i] = self.read[i], len(self.ids[i])
            self.done[i] = self.row_done(self.texts[i])
        return self.done.clone().to(input_ids.device)


class Engine:
    def __init__(self, model, tokenizer, device: torch.device | str = "cpu",
                 logits_fn: LogitsFn | None = None) -> None:
        self.model, self.tok, self.device = model, tokenizer, torch.device(device)
        self.logits_fn = logits_fn
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id

    # ---- helpers -------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tok(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[i, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _right_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(max(len(s) for s in seqs), 1)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
                mask[i, :len(s)] = 1
        return ids.to(self.device), mask.to(self.device)

    @staticmethod
    def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    # ---- generation ------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
                 stops: Sequence[str] = (), stop_regex: str | None = None,
                 progress: Progress | None = None) -> list[str]:
        """Greedy continuations (decoded, special tokens dropped, not yet cut at stops)."""
        encoded = self.encode(prompts)
        out: list[str] = [""] * len(prompts)
        for batch in self._batches([len(e) for e in encoded], batch_size):
            seqs = [encoded[i] for i in batch]
            if self.logits_fn is not None:
                texts = self._greedy_loop(seqs, max_new_tokens, stops, stop_regex)
            else:
                texts = self._hf_generate(seqs, max_new_tokens, stops, stop_regex)
            for i, t in zip(batch, texts):
                out[i] = t
            if progress is not None:
                progress.advance(len(batch))
        return out

    def _hf_generate(self, seqs, max_new_tokens, stops, stop_regex) -> list[str]:
        from transformers import GenerationConfig, StoppingCriteriaList
        ids, mask = self._left_pad(seqs)
        if max_new_tokens <= 0:
            return [""] * len(seqs)
        crit = StopCriteria(self.tok, ids.shape[1], stops, stop_regex)
        gcfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=self.pad_id, eos_token_id=self.eos_id,
                                num_beams=1)
        gen = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gcfg,
                                  stopping_criteria=StoppingCriteriaList([_HFStop(crit)]))
        return [self.tok.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in gen]

    def _greedy_loop(self, seqs, max_new_tokens, stops, stop_regex) -> list[str]:
        """Greedy decoding without a cache, for a custom logits function (thought modes)."""
        ids, mask = self._left_pad(seqs)
        start = ids.shape[1]
        crit = StopCriteria(self.tok, start, stops, stop_regex)
        finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
        for _ in range(max_new_tokens):
            logits = self.logits_fn(ids, mask)[:, -1]
            nxt = logits.argmax(-1)
            nxt = torch.where(finished, torch.full_like(nxt, self.pad_id), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, (~finished).long()[:, None]], dim=1)
            finished |= nxt == self.eos_id
            finished |= crit(ids.cpu()).to(ids.device)
            if bool(finished.all()):
                break
        return [self.tok.decode(row[start:][m[start:].bool()], skip_special_tokens=True)
                for row, m in zip(ids, mask)]

    # ---- log-likelihood ----------------------------------------------------------------
    @torch.inference_mode()
    def score_choices(self, prefixes: Sequence[str], continuations: Sequence[Sequence[str]], *,
                      batch_size: int, letter_tokens: Sequence[Sequence[int]] | None = None,
                      progress: Progress | None = None) -> list[dict]:
        """For each prefix, the summed log-probability and token count of each continuation,
        plus (when `letter_tokens` is given) the next-token log-probability of each letter
        token right after the prefix. Returns [{"logprob": [...], "ntok": [...],
        "letter_logprob": [...]}] in the caller's order."""
        pre = self.encode(prefixes)
        conts = [self.encode(list(c)) for c in continuations]
        for c in conts:
            for toks in c:
                if not toks:
                    raise ValueError("empty continuation")
        out: list[dict] = [{} for _ in prefixes]
        for batch in self._batches([len(p) for p in pre], batch_size):
            if self.logits_fn is not None:
                results = self._score_full([pre[i] for i in batch], [conts[i] for i in batch])
            else:
                results = self._score_shared([pre[i] for i in batch], [conts[i] for i in batch])
            for i, (last_lp, sums) in zip(batch, results):
                row = {"logprob": [s for s, _ in sums], "ntok": [n for _, n in sums]}
                if letter_tokens is not None:
                    row["letter_logprob"] = [float(last_lp[t]) for t in letter_tokens[i]]
                out[i] = row
            if progress is not None:
                progress.advance(len(batch))
        return out

    def _score_shared(self, pre, conts):
        ids, mask = self._left_pad(pre)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        try:
            res = self.model(**kwargs, logits_to_keep=1)
        except TypeError:   # a model class without logits_to_keep
            res = self.model(**kwargs)
        last_lp = F.log_softmax(res.logits[:, -1].float(), dim=-1)           # [B, V]
        cache = res.past_key_values
        rep = [b for b, c in enumerate(conts) for _ in c]
        flat = [toks for c in conts for toks in c]
        rep_t = torch.tensor(rep, dtype=torch.long, device=ids.device)
        cache.batch_select_indices(rep_t)
        cids, cmask = self._right_pad(flat)
        full_mask = torch.cat([mask[rep_t], cmask], dim=1)
        prefix_len = mask.sum(-1)[rep_t]
        cpos = prefix_len[:, None] + torch.arange(cids.shape[1], device=ids.device)[None]
        res2 = self.model(input_ids=cids, attention_mask=full_mask, position_ids=cpos,
                          past_key_values=cache, use_cache=True)
        logits = res2.logits.float()                                          # [N, C, V]
        lse = torch.logsumexp(logits, dim=-1)                                 # [N, C]
        # log p(token k+1) = logit - logsumexp at position k (no full log_softmax copy)
        nxt = torch.cat([cids[:, 1:], cids[:, :1]], dim=1)
        tok_lp = logits.gather(-1, nxt[..., None])[..., 0] - lse              # [N, C]
        sums_flat = []
        for n, toks in enumerate(flat):
            first = last_lp[rep[n], toks[0]]
            rest = tok_lp[n, :len(toks) - 1].sum() if len(toks) > 1 else 0.0
            sums_flat.append((float(first + rest), len(toks)))
        results, k = [], 0
        for b, c in enumerate(conts):
            results.append((last_lp[b].cpu(), sums_flat[k:k + len(c)]))
            k += len(c)
        return results

    def _score_full(self, pre, conts):
        """Reference path: each prefix + continuation as one sequence (no cache sharing)."""
        rows = [(b, p + toks, len(p)) for b, (p, c) in enumerate(zip(pre, conts)) for toks in c]
        ids, mask = self._right_pad([r[1] for r in rows])
        logits = self._logits(ids, mask)
        lp = F.log_softmax(logits.float(), dim=-1)
        results: list[tuple[torch.Tensor, list]] = [(None, []) for _ in pre]  # type: ignore
        for n, (b, seq, plen) in enumerate(rows):
            t = torch.tensor(seq[plen:], dtype=torch.long, device=ids.device)
            s = lp[n, plen - 1:len(seq) - 1].gather(-1, t[:, None]).sum()
            last, sums = results[b]
            results[b] = (lp[n, plen - 1].cpu() if last is None else last, sums + [(float(s), len(t))])
        return results

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.logits_fn is not None:
            return self.logits_fn(ids, mask)
        return self.model(input_ids=ids, attention_mask=mask).logits

    # ---- per-token NLL -----------------------------------------------------------------
    @torch.inference_mode()
    def token_stats(self, texts: Sequence[str], *, batch_size: int, max_tokens: int,
                    progress: Progress | None = None, chunk: int = 512,
                    with_entropy: bool = True) -> list[dict]:
        """Per document: token ids, the NLL of each token given its prefix and the entropy
        (full vocabulary, nats) of the distribution that predicted it (tokens 1..L-1).
        with_entropy=False skips the entropy (three more passes over the vocabulary per
        token) for callers that use only the NLL; "entropy" is then absent."""
        enc = [e[:max_tokens] for e in self.encode(texts)]
        out: list[dict] = [{} for _ in texts]
        for batch in self._batches([len(e) for e in enc], batch_size):
            seqs = [enc[i] for i in batch]
            ids, mask = self._right_pad(seqs)
            nll = torch.zeros(ids.shape[0], max(ids.shape[1] - 1, 0))
            ent = torch.zeros_like(nll)
            for (s, e), logits in self._logit_chunks(ids, mask, chunk):
                e = min(e, ids.shape[1] - 1)
                if e <= s:
                    continue
                lg = logits[:, : e - s].float()
                lp = F.log_softmax(lg, dim=-1)
                tgt = ids[:, s + 1:e + 1]
                nll[:, s:e] = -lp.gather(-1, tgt[..., None])[..., 0].cpu()
                if with_entropy:
                    ent[:, s:e] = entropy_from_logp(lp).cpu()
            for row, i in enumerate(batch):
                n = len(enc[i])
                out[i] = {"ids": enc[i], "nll": nll[row, :max(n - 1, 0)].clone()}
                if with_entropy:
                    out[i]["entropy"] = ent[row, :max(n - 1, 0)].clone()
            if progress is not None:
                progress.advance(len(batch))
        return out

    def _logit_chunks(self, ids, mask, chunk):
        """Logits over positions [s, e) in chunks, so a [B, T, V] tensor is never whole
        (the final hidden states go through the output layer a chunk at a time)."""
        if self.logits_fn is None:
            base = getattr(self.model, "base_model", None)
            head = self.model.get_output_embeddings()
            if base is not None and base is not self.model and head is not None:
                hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
                for s in range(0, ids.shape[1], chunk):
                    yield (s, s + chunk), head(hidden[:, s:s + chunk])
                return
        logits = self._logits(ids, mask)
        for s in range(0, ids.shape[1], chunk):
            yield (s, s + chunk), logits[:, s:s + chunk]


class _HFStop:
    """Adapter so StopCriteria is accepted by StoppingCriteriaList (duck-typed subclass)."""

    def __new__(cls, crit: StopCriteria):
        from transformers import StoppingCriteria

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return crit(input_ids.cpu(), scores).to(input_ids.device)
        return _Stop()
