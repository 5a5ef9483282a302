"""RPT: Reinforcement Pre-Training (objectives.md §3, arXiv:2506.08007).

Next-token prediction as a verifiable reasoning task. At positions a fixed proxy model
finds hard (top-k entropy above a threshold) the model reads the context in a prompt,
reasons, and answers with the next token in `\\boxed{}`; the corpus verifies the answer.

- Proxy: `proxy_model` = "" is a frozen copy of the model as it was at the start, never
  the model being trained; any other spec loads that (fixed) model.
- Top-k entropy: the proxy's top-k probabilities are **renormalised** to sum to 1 and the
  entropy is taken over that k-token distribution (bounded by log k; 2.77 nats for k=16).
  This reads "entropy over the top-16 next tokens" as the entropy of a distribution over
  those 16 tokens. `topk_entropy(..., renormalise=False)` gives the other reading (the
  top-k terms of the full-vocabulary entropy, a lower bound of it).
- Reward: byte-exact prefix match of the boxed prediction against the true continuation,
  accepted only when its length falls on one of the document's own token boundaries
  (`rpt_reward`). Token bytes come from the tokenizer's raw tokens (`token_bytes`).
- GRPO: G samples per position, group-normalised advantages, groups with all-equal
  rewards dropped (and counted), exactly on-policy (ratio 1, same clipped form), KL 0 and
  entropy bonus 0 by default.
- Format warm-up: for the first `warmup_steps_format` optimizer steps the model is trained
  with NTP on synthetic completions `<think>…</think>\\n\\n\\boxed{x_t}` (the true next token),
  so a small base model learns the answer format before RL, at its own learning rate
  `warmup_lr` (default 1e-4; measured on SmolLM2-135M, batch 2 × 128, 64 new tokens: after 10
  such steps the box-failure rate of the next 5 RL steps was 0.5, 0.125, 0.375, 0.25, 0.0,
  while 4 warm-up steps at the RL rate 1e-6 left it at 1.0). Default 20 steps (0 = off):
  without it tiny and 135M base models never write a box and every group is dropped.

G defaults to 4 (paper 8) and max_new_tokens to 48 so a CPU step stays short.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F

from lab import profiling, rl
from lab.config import setting
from lab.entropy import entropy_stats, forking_mask, masked_mean
from lab.errors import LabError
from lab.flops import forward_flops, train_flops
from lab.models import describe
from lab.objectives.base import Objective, StepOutput
from lab.records import DISPLAY_SHARE

PROMPT = ("Complete the given text under '### Context' by predicting the next token, and wrap "
          "it in '\\boxed{}'. Reason step by step between <think> and </think> first, then give "
          "the next token (the token may begin with a space) in '\\boxed{}'.\n\n"
          "### Context\n{context}")
BOX = "\\boxed{"


# ---- prompt, token bytes, box extraction, reward ------------------------------------------

def build_prompt(tokenizer, context: str) -> list[int]:
    """The RPT prompt for one context (chat template when the tokenizer has one)."""
    return rl.user_prompt(tokenizer, PROMPT.replace("{context}", context))


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable character standing for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _tokenizer_kind(tokenizer) -> str:
    """'bytelevel' (GPT-2 style), 'sentencepiece' (▁ and <0xNN> byte fallback) or 'other'."""
    kind = getattr(tokenizer, "_thoughtlab_kind", None)
    if kind:
        return kind
    kind = "other"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        import json
        spec = json.loads(backend.to_str())
        dec = spec.get("decoder") or {}
        kinds = {dec.get("type")} | {d.get("type") for d in dec.get("decoders", []) or []}
        if "ByteLevel" in kinds:
            kind = "bytelevel"
        elif "ByteFallback" in kinds or "Metaspace" in kinds:
            kind = "sentencepiece"
    elif hasattr(tokenizer, "byte_decoder"):
        kind = "bytelevel"
    try:
        tokenizer._thoughtlab_kind = kind
    except AttributeError:
        pass
    return kind


def token_bytes(tokenizer, ids: list[int]) -> list[bytes]:
    """Each token's raw bytes, from the tokenizer's own token strings (no decode/encode round
    trip, no stripping): a multi-byte character split across tokens keeps its pieces."""
    kind = _tokenizer_kind(tokenizer)
    toks = tokenizer.convert_ids_to_tokens(list(ids))
    special = set(tokenizer.all_special_ids)
    out = []
    for i, t in zip(ids, toks):
        if i in special or t is None:
            out.append((t or "").encode("utf-8"))
        elif kind == "bytelevel":
            dec = _byte_decoder()
            out.append(bytes(dec[c] for c in t) if all(c in dec for c in t) else t.encode("utf-8"))
        elif kind == "sentencepiece":
            if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                out.append(bytes([int(t[3:5], 16)]))
            else:
                out.append(t.replace("▁", " ").encode("utf-8"))
        else:
            out.append(tokenizer.decode([i], clean_up_tokenization_spaces=False).encode("utf-8"))
    return out


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}. Braces nest ("\\boxed{\\frac{1}{2}}" -> "\\frac{1}{2}").
    So that lone-brace tokens (common in LaTeX) can be answered at all: closing braces right
    after a box belong to it ("\\boxed{}}" -> "}"), and a last box that never balances runs to
    the last "}" ("\\boxed{{}" -> "{"); with no "}" at all it is unfinished (None)."""
    found, i = None, 0
    while (start := text.find(BOX, i)) != -1:
        body = start + len(BOX)
        depth, j = 1, body
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:
            end = text.rfind("}", body)
            return text[body:end] if end >= 0 else None
        while j < len(text) and text[j] == "}":
            j += 1
        found, i = text[body:j - 1], j
    return found


def extract_prediction(completion: str) -> str | None:
    """The prediction: the last box after </think>; with no think block, the last box of the
    completion; an unterminated <think> gives none."""
    if "</think>" in completion:
        return last_boxed(completion[completion.rindex("</think>") + len("</think>"):])
    if "<think>" in completion:
        return None
    return last_boxed(completion)


def byte_match_reward(prediction: str | None, continuation: list[bytes]) -> float:
    """1 if the prediction's bytes are a prefix of the true continuation that ends on one of
    its token boundaries (cumulative byte lengths of the true tokens), else 0."""
    if prediction is None:
        return 0.0
    pred = prediction.encode("utf-8")
    truth = b"".join(continuation)
    return float(len(pred) in set(accumulate(len(b) for b in continuation))
                 and truth[:len(pred)] == pred)


def rpt_reward(completion: str, continuation: list[bytes]) -> tuple[float, str | None]:
    """(reward, prediction) for one completion; `continuation` = bytes of x_t, x_t+1, …"""
    pred = extract_prediction(completion)
    return byte_match_reward(pred, continuation), pred


def reasoning_text(completion: str) -> str:
    """The chain of thought shown to users: the think block, else the text before the box."""
    if "<think>" in completion and "</think>" in completion:
        return completion[completion.index("<think>") + len("<think>"):completion.rindex("</think>")].strip()
    cut = completion.rfind(BOX)
    return (completion[:cut] if cut >= 0 else completion).strip()


def topk_entropy(logits: torch.Tensor, k: int = 16, renormalise: bool = True) -> torch.Tensor:
    """Entropy (nats) over the k most likely next tokens: [..., V] -> [...]. With
    renormalise=True (RPT's choice) the k probabilities are rescaled to sum to 1; otherwise
    -sum p log p is taken over those k terms of the full distribution."""
    logp = F.log_softmax(logits.float(), -1)
    top = logp.topk(min(k, logp.shape[-1]), -1).values
    if renormalise:
        top = top - torch.logsumexp(top, -1, keepdim=True)
    p = top.exp()
    return -torch.where(p > 0, p * top, torch.zeros_like(p)).sum(-1)   # 0·log 0 = 0


def candidate_positions(tokenizer, ids: list[int], tok_bytes: list[bytes], min_context: int) -> list[int]:
    """Targets t worth asking about: enough context, x_t not a special token, and x_t starting
    on a character boundary (a prefix ending mid-character cannot be shown as text)."""
    special = set(tokenizer.all_special_ids)
    return [t for t in range(min(min_context, len(ids) - 1), len(ids))
            if ids[t] not in special and tok_bytes[t] and (tok_bytes[t][0] & 0xC0) != 0x80]


def context_text(tok_bytes: list[bytes], t: int) -> str:
    return b"".join(tok_bytes[:t]).decode("utf-8", errors="replace")


def answer_text(continuation: list[bytes], max_tokens: int = 8) -> str:
    """The shortest run of true tokens from x_t that is whole UTF-8 text: the answer a
    perfect model would box (one token, or more when x_t ends inside a character)."""
    acc = b""
    for piece in continuation[:max_tokens]:
        acc += piece
        try:
            return acc.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return acc.decode("utf-8", errors="replace")


def format_completion(context: str, target: str) -> str:
    """A synthetic completion in the answer format, for the format warm-up."""
    tail = context[-30:].replace("\n", " ")
    return (f"<think>\nThe text ends with \"{tail}\", so the next token continues it.\n</think>\n\n"
            f"{BOX}{target}}}")


# ---- the objective ----------------------------------------------------------------------

@dataclass
class RPTParams:
    proxy_model: str = setting("", "Model that picks the hard positions by its entropy; \"\" = a frozen "
                               "copy of the starting model.", advanced=True)
    top_k: int = setting(16, "The proxy's top-k tokens the position's entropy is taken over.", advanced=True)
    entropy_threshold: float = setting(1.0, "Train only at positions whose renormalised top-k proxy "
                                       "entropy exceeds this many nats (at most log k).")
    group_size: int = setting(4, "G: answers sampled per position, advantages normalised within the "
                              "group (GRPO). Paper 8.")
    temperature: float = setting(0.8, "Sampling temperature of the reasoning.")
    max_new_tokens: int = setting(48, "Longest reasoning plus boxed answer, in tokens.")
    positions_per_doc: int = setting(1, "Hard positions trained per window.")
    min_context: int = setting(8, "Tokens of text before the earliest trained position.", advanced=True)
    warmup_steps_format: int = setting(20, "Optimizer steps of format warm-up (NTP on <think>...</think> "
                                       "\\boxed{next token}) before RL; 0 = off.")
    # The RL lr (~1e-6) is far too small to teach a 135M model the format.
    warmup_lr: float = setting(1e-4, "Learning rate of the format warm-up (0 = the run's lr).")
    eps_low: float = setting(0.2, "Clipped surrogate: lower clip of the policy's probability ratio.",
                             advanced=True)
    eps_high: float = setting(0.28, "Clipped surrogate: upper clip of the probability ratio.", advanced=True)
    kl_beta: float = setting(0.0, "Weight of a k3 KL penalty to the frozen starting model.", advanced=True)
    entropy_bonus: float = setting(0.0, "Weight of an entropy bonus on the sampled tokens.", advanced=True)

    def problems(self, cfg) -> list[str]:
        out = []
        if self.top_k < 2:
            out.append(f"rpt top_k must be at least 2 (got {self.top_k})")
        if self.entropy_threshold < 0:
            out.append(f"rpt entropy_threshold must be >= 0 nats (got {self.entropy_threshold})")
        if self.group_size < 2:
            out.append(f"rpt group_size must be at least 2 for group-normalised advantages "
                       f"(got {self.group_size})")
        if not self.temperature > 0:
            out.append(f"rpt temperature must be positive (got {self.temperature})")
        if self.max_new_tokens < 1:
            out.append(f"rpt max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if self.positions_per_doc < 1:
            out.append(f"rpt positions_per_doc must be at least 1 (got {self.positions_per_doc})")
        if self.min_context < 1 or self.min_context >= cfg.seq_len:
            out.append(f"rpt min_context must be in [1, seq_len) (got {self.min_context})")
        if self.warmup_lr < 0:
            out.append(f"rpt warmup_lr must be >= 0, 0 = the run's lr (got {self.warmup_lr})")
        if self.warmup_steps_format < 0:
            out.append(f"rpt warmup_steps_format must be >= 0 (got {self.warmup_steps_format})")
        if not 0 <= self.eps_low < 1 or self.eps_high < 0:
            out.append(f"rpt clip range needs 0 <= eps_low < 1 and eps_high >= 0 "
                       f"(got {self.eps_low}, {self.eps_high})")
        if self.kl_beta < 0 or self.entropy_bonus < 0:
            out.append("rpt kl_beta and entropy_bonus must be >= 0")
        return out


class RPT(Objective):
    name = "rpt"
    Params = RPTParams
    description = ("RPT: at hard positions (proxy top-k entropy) reason, box the next token; "
                   "reward = byte-exact match on a token boundary; GRPO.")
    # Cost benchmark only (bench/benchmark.py, case "rpt"): train groups GRPO would drop too
    # (their advantages stay 0), to time the full RL step a small model rarely reaches.
    train_equal_groups: bool = False

    def __init__(self, model, tokenizer, params, cfg, device) -> None:
        super().__init__(model, tokenizer, params, cfg, device)
        self.pad_id = rl.pad_id_of(tokenizer)
        self.opt_steps = 0
        # The proxy is fixed for the whole run: copy the model now, before any update (the
        # objective is built before a resumed run loads its checkpoint weights, lab/train.py).
        need_copy = not params.proxy_model or params.kl_beta > 0
        self.start_copy = rl.frozen_copy(model, device) if need_copy else None
        self.proxy = self.start_copy if not params.proxy_model else self._load_proxy(params.proxy_model)
        self.proxy_desc = self.desc if not params.proxy_model else describe(self.proxy)

    def _load_proxy(self, spec: str) -> torch.nn.Module:
        from lab.models import load_model
        lm = load_model(spec, trust_remote_code=self.cfg.trust_remote_code)
        if lm.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise LabError(f"RPT proxy model {spec!r} has a different tokenizer from the trained "
                           "model; the entropy filter needs the same tokens.")
        return rl.frozen_copy(lm.model.to(self.device))

    def lr_multiplier(self) -> float:
        warming = self.opt_steps < self.params.warmup_steps_format
        return self.params.warmup_lr / self.cfg.lr if warming and self.params.warmup_lr else 1.0

    def after_optimizer_step(self) -> None:
        self.opt_steps += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {"opt_steps": torch.tensor([self.opt_steps])}   # the format warm-up's clock

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if "opt_steps" in tensors:
            self.opt_steps = int(tensors["opt_steps"].reshape(-1)[0])

    # ---- positions -------------------------------------------------------------------
    @profiling.timed("rpt.proxy_filter")
    def _select(self, ids: torch.Tensor):
        """Hard positions: (row, t, proxy entropy) for up to positions_per_doc per window, the
        windows' token bytes, the proxy's top-k entropy [B, T-1] (ent[b, t-1] is about x_t)
        and the filter's metrics."""
        p = self.params
        with torch.no_grad():
            logits = self.proxy(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            ent = topk_entropy(logits[:, :-1], p.top_k).cpu()
        chosen, all_bytes, n_cand, n_pass = [], [], 0, 0
        for b in range(ids.shape[0]):
            row = ids[b].tolist()
            tb = token_bytes(self.tokenizer, row)
            all_bytes.append(tb)
            cands = candidate_positions(self.tokenizer, row, tb, p.min_context)
            row_ent = ent[b].tolist()
            hard = [t for t in cands if row_ent[t - 1] >= p.entropy_threshold]
            n_cand, n_pass = n_cand + len(cands), n_pass + len(hard)
            for i in rl.sample_positions(0, len(hard), p.positions_per_doc):
                chosen.append((b, hard[i], row_ent[hard[i] - 1]))
        # filtered_positions: candidate positions per window that pass the entropy filter;
        # filter_share: the share of candidates that pass; positions: how many were trained.
        stats = {"rpt/filtered_positions": n_pass / max(1, ids.shape[0]),
                 "rpt/filter_share": n_pass / max(1, n_cand),
                 "rpt/positions": float(len(chosen))}
        return chosen, all_bytes, ent, stats

    # ---- one step --------------------------------------------------------------------
    def step(self, batch: dict[str, torch.Tensor], *, record: int) -> StepOutput:
        ids = batch["input_ids"]
        chosen, tok_bytes, ent, metrics = self._select(ids)
        out = StepOutput(loss=None, metrics=metrics, tokens=int(batch["attention_mask"].sum()),
                         flops=forward_flops(self.proxy_desc, ids.numel(), ids.shape[1]))
        if chosen:
            contexts = [context_text(tok_bytes[b], t) for b, t, _ in chosen]
            prompts = [build_prompt(self.tokenizer, c) for c in contexts]
            if self.opt_steps < self.params.warmup_steps_format:
                self._format_step(out, ids, chosen, tok_bytes, contexts, prompts)
            else:
                self._rl_step(out, ids, chosen, tok_bytes, contexts, prompts, record)
        if out.loss is None:   # no hard position, or every group dropped
            out.loss = rl.zero_loss(self.model, ids)
        if record > 0:
            n = min(record, ids.shape[0])
            extras = [[{}] + [{"proxy_topk_entropy": h} for h in ent[b].tolist()] for b in range(n)]
            for b, t, _ in chosen:
                if b < n:
                    extras[b][t]["rpt_position"] = True
            out.token_records = rl.window_token_records(self.raw_model, self.tokenizer, ids[:n],
                                                        display_share=DISPLAY_SHARE, extras=extras)
        return out

    def _format_step(self, out: StepOutput, ids, chosen, tok_bytes, contexts, prompts) -> None:
        """Supervised format warm-up: NLL of a synthetic boxed completion of the true token."""
        tok = self.tokenizer
        comps = [tok.encode(format_completion(c, answer_text(tok_bytes[b][t:])), add_special_tokens=False)
                 + [tok.eos_token_id] for c, (b, t, _) in zip(contexts, chosen)]
        ro = rl.teacher_rollouts(prompts, comps, self.pad_id, ids.device)
        logp, mask, _ = rl.policy_logprobs(self.model, ro, with_entropy=False)
        out.loss = -(logp * mask).sum() / mask.sum().clamp(min=1)
        n = int(ro.prompt_mask.sum() + mask.sum())
        out.flops += train_flops(self.desc, n, n // len(prompts))
        out.metrics.update({"rpt/warmup": 1.0, "nll": out.loss.item()})

    def _rl_step(self, out: StepOutput, ids, chosen, tok_bytes, contexts, prompts, record: int) -> None:
        p, tok, G = self.params, self.tokenizer, self.params.group_size
        ro = rl.sample_groups(self.raw_model, prompts, group_size=G, max_new_tokens=p.max_new_tokens,
                              temperature=p.temperature, pad_id=self.pad_id,
                              eos_ids=[tok.eos_token_id])
        texts = [tok.decode(ro.row_tokens(i), skip_special_tokens=True) for i in range(len(ro.stop))]
        scored = [rpt_reward(texts[i], tok_bytes[chosen[i // G][0]][chosen[i // G][1]:])
                  for i in range(len(texts))]
        reward = torch.tensor([r for r, _ in scored], device=ids.device)
        adv, keep = rl.group_advantages(reward, G)
        rows = (torch.ones_like(keep) if self.train_equal_groups else keep).nonzero()[:, 0]
        out.flops += rl.rollout_flops(self.desc, ro)
        stats: dict[str, float] = {}
        if len(rows):
            bonus = p.entropy_bonus > 0
            logp, mask, ent = rl.policy_logprobs(self.model, ro, rows, temperature=p.temperature,
                                                 entropy_grad=bonus)
            selected = forking_mask(ent.detach(), mask, self.cfg.rho)
            ref = None
            if p.kl_beta > 0:
                with torch.no_grad():
                    ref = rl.policy_logprobs(self.start_copy, ro, rows, temperature=p.temperature,
                                             with_entropy=False)[0]
            out.loss, stats = rl.clipped_surrogate(logp, logp.detach(), adv[rows], selected,
                                                   eps_low=p.eps_low, eps_high=p.eps_high,
                                                   ref_logp=ref, kl_beta=p.kl_beta)
            if bonus:
                out.loss = out.loss - p.entropy_bonus * masked_mean(ent, mask)
            n = int(ro.prompt_mask[rows].sum() + mask.sum())
            out.flops += train_flops(self.desc, n, n // len(rows)) \
                + (forward_flops(self.desc, n, n // len(rows)) if ref is not None else 0.0)
            stats.update(entropy_stats(ent.detach(), mask))
        n_groups = len(chosen)
        out.metrics.update({
            "reward/mean": reward.mean().item(),
            # With a 0/1 reward the two coincide; reward/mean is the name shared across methods.
            "rpt/accuracy": reward.mean().item(),
            "rpt/format_fail": sum(pred is None for _, pred in scored) / len(scored),
            "rpt/dropped_groups": float(n_groups - int(keep.view(-1, G)[:, 0].sum())),
            "rpt/dropped_share": 1.0 - int(keep.view(-1, G)[:, 0].sum()) / n_groups,
            "thought/length": ro.lengths.float().mean().item(),
            "rl/adv_std": adv[rows].std().item() if len(rows) > 1 else 0.0,
            "rpt/warmup": 0.0,
            **stats})
        for k, (b, t, h) in enumerate(chosen):
            if b >= record:
                continue
            target = answer_text(tok_bytes[b][t:])
            for j in range(G):
                i = k * G + j
                out.thought_records.append({
                    "sample": b, "position": t, "idx": j, "kind": "rpt",
                    "text": reasoning_text(texts[i]), "n_tokens": int(ro.lengths[i]),
                    "reward": scored[i][0], "advantage": adv[i].item(),
                    "prediction": scored[i][1], "target": target,
                    "extra": {"context": contexts[k][-200:], "completion": texts[i],
                              "proxy_entropy": h, "dropped": not bool(keep[i])}})
