"""Playground inference: any model on any text, token by token (the Playground page's logic).

No Streamlit here: the page caches and renders; everything it shows is computed by these
functions, so notebooks and tests see the same numbers.

Conventions are the `tokens` / `thoughts` tables' (lab/records.py): row `position` = t
describes token x_t and the distribution p(· | x_<t) that predicted it; position 0 has no
prediction. Texts are tokenised without special tokens (as Quiet-STaR's `think_text` does),
so every table of one text lines up position by position.

- `token_table`: entropy, probability and NLL of the true token, forking mark (top 20 %
  entropy of the text), the model's own top guess. One forward.
- `thought_table`: for a Quiet-STaR checkpoint, the thoughts after every token, the mixing
  weight w and base vs mixed probability of the next token (`quiet_star.think_text`).
- `compare`: two models' token tables side by side with per-token differences.
- `rlp_thoughts` / `rpt_rollouts`: G thoughts (RLP) or rollouts (RPT) at one position with
  the rewards the objectives would give them, the model itself as RLP's teacher.
- `read_items`: GSM8K / CommonsenseQA records as texts to poke the model with.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pandas as pd
import torch

from lab import rl
from lab.errors import LabError
from lab.models import LoadedModel, load_model, resolve_checkpoint
from lab.objectives import rlp, rpt
from lab.objectives.quiet_star import HEAD_NAME, QSHead, load_head, think_text
from lab.records import sequence_records, token_texts

MAX_TOKENS = 1024          # longer texts are cut (the page shows them 400 tokens at a time)
ITEM_FILES = {"GSM8K": "gsm8k_test.jsonl", "CommonsenseQA": "commonsenseqa_dev.jsonl"}
F = TypeVar("F", bound=Callable[..., Any])


def _few_threads(fn: F) -> F:
    """Run `fn` with THOUGHTLAB_THREADS (default 1) intra-op CPU threads. On a 2-core machine
    shared with training jobs, OpenMP's spinning threads collapse under contention: measured
    here, SmolLM2-135M RLP sampling took 134 s with 2 threads vs 14 s with 1 (Quiet-STaR
    thoughts 64 s vs 12 s, a 100-token forward 5.8 s vs 0.9 s); idle, 2 gain at most 2x."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        wanted = int(os.environ.get("THOUGHTLAB_THREADS", "1") or 1)
        before = torch.get_num_threads()
        if wanted < 1 or wanted == before:
            return fn(*args, **kwargs)
        torch.set_num_threads(wanted)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper  # type: ignore[return-value]


# ---- models -------------------------------------------------------------------------------

@dataclass
class PlayModel:
    """A loaded model plus the Quiet-STaR head saved next to its weights, if any."""
    spec: str                        # resolved spec (run:ID@STEP for checkpoints)
    loaded: LoadedModel
    head: QSHead | None = None
    folder: Path | None = None       # where the weights came from, for local models

    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device


def resolve_spec(spec: str, data_dir: str | Path | None) -> str:
    """Pin `run:ID` to `run:ID@STEP` of its latest complete checkpoint (so a cache keyed by
    the spec reloads when a newer checkpoint appears). Raises LabError for a bad run."""
    spec = (spec or "").strip()
    if not spec:
        raise LabError("No model given: pick a preset (smollm2-135m, tiny-random), a run's "
                       "checkpoint, or type a folder or hub id.")
    if spec.startswith("run:") and "@" not in spec:
        folder = resolve_checkpoint(spec, data_dir)
        return f"{spec}@{int(folder.name.removeprefix('step-'))}"
    return spec


def load(spec: str, data_dir: str | Path | None = None) -> PlayModel:
    """Load a model for inference (eval mode, no grad needed), with its Quiet-STaR head when
    the checkpoint has one. Every failure is a LabError with a message for the user."""
    spec = resolve_spec(spec, data_dir)
    try:
        loaded = load_model(spec, data_dir)
    except LabError:
        raise
    except Exception as e:  # noqa: BLE001 - the page shows a message, never a traceback
        raise LabError(f"Could not load model {spec!r}: {type(e).__name__}: "
                       f"{str(e).splitlines()[0][:200] if str(e) else ''}") from e
    loaded.model.eval()
    folder = resolve_checkpoint(spec, data_dir) if spec.startswith("run:") else \
        (Path(spec).expanduser() if Path(spec).expanduser().is_dir() else None)
    head = None
    if folder is not None and (folder / f"extra_{HEAD_NAME}.safetensors").exists():
        try:
            head = load_head(folder, loaded.model).eval()
        except LabError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LabError(f"The Quiet-STaR head in {folder} could not be read ({e}).") from e
    return PlayModel(spec=spec, loaded=loaded, head=head, folder=folder)


def encode(tokenizer, text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
    """Token ids of `text` exactly as think_text reads it (no special tokens, cut)."""
    return tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]


def _ids(pm: PlayModel, text: str, max_tokens: int) -> list[int]:
    ids = encode(pm.tokenizer, text, max_tokens)
    if len(ids) < 2:
        raise LabError("Type at least two tokens of text: the first token has nothing before "
                       "it to be predicted from.")
    return ids


# ---- per-token statistics -----------------------------------------------------------------

@_few_threads
@torch.no_grad()
def token_table(pm: PlayModel, text: str, *, max_tokens: int = MAX_TOKENS) -> pd.DataFrame:
    """One row per token: position, token_id, token, entropy (nats, full vocabulary), nll and
    prob of the true token, forking (top-20 % entropy of this text), and the model's top
    guess `top` with its probability `top_prob`. Position 0 has no prediction (NaN)."""
    ids = torch.tensor([_ids(pm, text, max_tokens)], device=pm.device)
    logits = pm.model(input_ids=ids).logits[0].float()
    rows = sequence_records(pm.tokenizer, ids[0], logits, sample=0)   # forking: records.DISPLAY_SHARE of the text
    top_p, top_i = torch.softmax(logits[:-1], -1).max(-1)
    tops = token_texts(pm.tokenizer, top_i.tolist())
    df = pd.DataFrame(rows).drop(columns=["sample"])
    df["top"] = [None] + tops
    df["top_prob"] = [None] + top_p.tolist()
    return df.astype({"entropy": float, "nll": float, "prob": float, "top_prob": float})


def summary(table: pd.DataFrame) -> dict[str, float]:
    """Headline numbers of a token table: mean entropy / NLL, the forking threshold and the
    share of tokens the model would have guessed (top == true token)."""
    pred = table.dropna(subset=["entropy"])
    return {"tokens": float(len(table)),
            "mean_entropy": float(pred["entropy"].mean()),
            "mean_nll": float(pred["nll"].mean()),
            "forking_threshold": float(pred.loc[pred["forking"], "entropy"].min()),
            "top1": float((pred["top"] == pred["token"]).mean())}


def default_position(table: pd.DataFrame) -> int:
    """Where to look first: the most uncertain predicted token that is not pure whitespace."""
    pred = table.iloc[1:]
    words = pred[pred["token"].str.strip() != ""]
    pick = words if not words.empty else pred
    return int(pick.loc[pick["entropy"].idxmax(), "position"])


@_few_threads
def thought_table(pm: PlayModel, text: str, *, n_thoughts: int = 2, temperature: float = 1.0,
                  seed: int = 0, corrupted: bool = False,
                  max_tokens: int = MAX_TOKENS) -> pd.DataFrame:
    """Quiet-STaR at every position (needs a checkpoint with a mixing head): position (the
    predicted token, as in token_table), w (mean mixing weight), base_prob / mixed_prob of
    the true token without / with the thoughts, prob_gain = mixed − base, logp_gain (nats),
    base_top, and `thoughts` (list of {text, n_tokens, w, mixed_prob, prediction})."""
    if pm.head is None:
        raise LabError(f"{pm.spec} has no Quiet-STaR mixing head (extra_{HEAD_NAME}.safetensors): "
                       "thoughts after every token need a checkpoint of a Quiet-STaR run.")
    _ids(pm, text, max_tokens)
    # Quiet-STaR's sampler divides by the temperature: 0 (greedy, as RLP/RPT read it) → near 0.
    rows = think_text(pm.model, pm.tokenizer, pm.head, text, n_passes=n_thoughts,
                      temperature=max(temperature, 1e-4), seed=seed, corrupted=corrupted,
                      max_tokens=max_tokens)
    df = pd.DataFrame([r for r in rows if r["target"] is not None])    # the last token predicts nothing
    df["prob_gain"] = df["mixed_prob"] - df["base_prob"]
    df["logp_gain"] = [_log(m) - _log(b) for m, b in zip(df["mixed_prob"], df["base_prob"])]
    return df[["position", "w", "base_prob", "mixed_prob", "prob_gain", "logp_gain", "base_top",
               "thoughts"]]


def _log(p: float) -> float:
    return math.log(max(p, 1e-30))


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two token tables of the same text (model A, model B) joined per token, with B − A
    differences: prob_gain (probability of the true token), logp_gain (nats, = nll_a − nll_b)
    and entropy_change. Both models must tokenise the text the same way."""
    if len(a) != len(b) or (a["token_id"].to_numpy() != b["token_id"].to_numpy()).any():
        raise LabError("The two models split the text into different tokens (different "
                       "tokenizers), so they cannot be compared token by token. Compare models "
                       "that share a tokenizer, e.g. a base model and checkpoints trained from it.")
    out = a[["position", "token_id", "token"]].copy()
    for col in ("entropy", "nll", "prob", "forking", "top"):
        out[f"{col}_a"], out[f"{col}_b"] = a[col].to_numpy(), b[col].to_numpy()
    out["prob_gain"] = out["prob_b"] - out["prob_a"]
    out["logp_gain"] = out["nll_a"] - out["nll_b"]
    out["entropy_change"] = out["entropy_b"] - out["entropy_a"]
    return out


# ---- thoughts and rollouts at one position -------------------------------------------------

@dataclass
class Sampled:
    """G thoughts (RLP) or rollouts (RPT) at one position and their rewards."""
    kind: str                        # "rlp" | "rpt"
    position: int                    # the target token x_t
    target: str                      # its text (RPT: the shortest whole-UTF-8 answer)
    context: str                     # the text before it
    rows: pd.DataFrame               # one row per thought / rollout, idx 0..G-1
    info: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[torch.Generator]:
    """Seed torch's global RNG (rl.sample_groups draws from it) without disturbing the
    caller's RNG state; also yield a generator for the corrupted-thought tokens."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield torch.Generator(device="cpu").manual_seed(seed + 1)


def _random_tokens(tokenizer, n: int, generator: torch.Generator) -> list[int]:
    """n uniformly random non-special token ids (the corrupted-thought control, §5)."""
    special = set(tokenizer.all_special_ids)
    out: list[int] = []
    while len(out) < n:
        out += [i for i in torch.randint(len(tokenizer), (2 * n,), generator=generator).tolist()
                if i not in special]
    return out[:n]


def _check_position(position: int, n: int) -> None:
    if not 1 <= position < n:
        raise LabError(f"Position {position} is outside the text: pick a token from 1 to {n - 1} "
                       "(token 0 has no context before it).")


@_few_threads
def rlp_thoughts(pm: PlayModel, text: str, position: int, *, n_thoughts: int = 4,
                 temperature: float = 0.7, max_thought_tokens: int = 32, seed: int = 0,
                 corrupted: bool = False, max_tokens: int = MAX_TOKENS) -> Sampled:
    """RLP at token x_t (t = position): G thoughts sampled after the RLP prompt
    `head(system) · x_<t · <think>` and each one's reward
        r = log p(x_t | x_<t, thought) − log p(x_t | x_<t)      (the model as its own teacher)
    both scored in one batched forward with the same template as training (lab/objectives/
    rlp.py). With `corrupted`, each thought is replaced by random tokens of the same length
    before scoring. Rows: idx, thought, reward, advantage (RLOO), prob / logp of x_t after the
    thought, hit (x_t is then the argmax), n_tokens, closed (the thought wrote </think>)."""
    tok, model = pm.tokenizer, pm.model
    ids = _ids(pm, text, max_tokens)
    _check_position(position, len(ids))
    pad = rl.pad_id_of(tok)
    open_ids = tok.encode(rlp.THINK_OPEN, add_special_tokens=False)
    close_ids = tok.encode(rlp.THINK_CLOSE, add_special_tokens=False)
    context = rl.chat_head(tok, rlp.SYSTEM_PROMPT) + ids[:position]
    target = ids[position]
    with _seeded(seed, pm.device) as gen:
        ro = rl.sample_groups(model, [context + open_ids], group_size=n_thoughts,
                              max_new_tokens=max_thought_tokens, temperature=temperature,
                              pad_id=pad, eos_ids=[tok.eos_token_id], stop_strings=[rlp.THINK_CLOSE],
                              tokenizer=tok)
        thoughts = [ro.row_tokens(i) for i in range(n_thoughts)]
        closed = [s == "stop" for s in ro.stop]
        if corrupted:
            thoughts = [_random_tokens(tok, len(t), gen) for t in thoughts]
            closed = [False] * n_thoughts
    # A thought that closed itself keeps its own </think>; otherwise it is appended (as in RLP).
    scored = [context + open_ids + t + ([] if c else close_ids) for t, c in zip(thoughts, closed)]
    no_thought = context + open_ids + close_ids
    logp, hit = rl.next_token_logprobs(model, scored + [no_thought], [target] * (n_thoughts + 1), pad)
    logp, hit = logp.cpu(), hit.cpu()
    reward = logp[:-1] - logp[-1]
    rows = pd.DataFrame({
        "idx": range(n_thoughts),
        "thought": [tok.decode(t, skip_special_tokens=False) for t in thoughts],
        "reward": reward.tolist(),
        "advantage": (rl.rloo_advantages(reward, n_thoughts).tolist() if n_thoughts > 1
                      else [0.0] * n_thoughts),
        "prob": logp[:-1].exp().tolist(), "logp": logp[:-1].tolist(), "hit": hit[:-1].tolist(),
        "n_tokens": [len(t) for t in thoughts], "closed": closed})
    return Sampled(kind="rlp", position=position, target=_text(tok, target),
                   context=tok.decode(ids[:position], skip_special_tokens=False), rows=rows,
                   info={"no_thought_logp": logp[-1].item(), "no_thought_prob": logp[-1].exp().item(),
                         "no_thought_hit": bool(hit[-1]), "mean_reward": reward.mean().item(),
                         "corrupted": corrupted, "seed": seed})


@_few_threads
def rpt_rollouts(pm: PlayModel, text: str, position: int, *, n_rollouts: int = 4,
                 temperature: float = 0.8, max_new_tokens: int = 48, seed: int = 0,
                 corrupted: bool = False, max_tokens: int = MAX_TOKENS) -> Sampled:
    """RPT at token x_t (t = position): G rollouts of the paper prompt with the context x_<t
    (lab/objectives/rpt.py), each answer taken from the last \\boxed{} after </think> and
    rewarded 1 when its bytes are a prefix of the true continuation ending on a token boundary.
    With `corrupted`, each rollout's reasoning is replaced by random tokens of the same length
    inside <think></think> and the model writes its answer after that. Rows: idx, reasoning,
    prediction (None = no box), reward, n_tokens, completion."""
    tok, model = pm.tokenizer, pm.model
    ids = _ids(pm, text, max_tokens)
    _check_position(position, len(ids))
    pieces = rpt.token_bytes(tok, ids)
    if position not in rpt.candidate_positions(tok, ids, pieces, 1):
        raise LabError(f"Position {position} is a special token or starts inside a character, so "
                       "its context cannot be written as text: pick another token.")
    pad = rl.pad_id_of(tok)
    context = rpt.context_text(pieces, position)
    prompt = rpt.build_prompt(tok, context)
    with _seeded(seed, pm.device) as gen:
        ro = rl.sample_groups(model, [prompt], group_size=n_rollouts, max_new_tokens=max_new_tokens,
                              temperature=temperature, pad_id=pad, eos_ids=[tok.eos_token_id])
        texts = [tok.decode(ro.row_tokens(i), skip_special_tokens=True) for i in range(n_rollouts)]
        lengths = [int(n) for n in ro.lengths.tolist()]
        if corrupted:
            texts, lengths = _corrupted_rollouts(pm, prompt, texts, gen, temperature, pad)
    scored = [rpt.rpt_reward(t, pieces[position:]) for t in texts]
    rows = pd.DataFrame({
        "idx": range(n_rollouts),
        "reasoning": [rpt.reasoning_text(t) for t in texts],
        "prediction": [p for _, p in scored], "reward": [r for r, _ in scored],
        "n_tokens": lengths, "completion": texts})
    return Sampled(kind="rpt", position=position, target=rpt.answer_text(pieces[position:]),
                   context=context, rows=rows,
                   info={"accuracy": float(rows["reward"].mean()),
                         "format_fail": float(rows["prediction"].isna().mean()),
                         "corrupted": corrupted, "seed": seed})


ANSWER_TOKENS = 16   # tokens an answer may take after a corrupted reasoning


def _corrupted_rollouts(pm: PlayModel, prompt: list[int], texts: list[str],
                        gen: torch.Generator, temperature: float, pad: int) -> tuple[list[str], list[int]]:
    """Replace each rollout's reasoning by random tokens of its length; let the model answer."""
    tok = pm.tokenizer
    head = "<think>\n"
    tail = "\n</think>\n\n"
    lengths = [len(tok.encode(rpt.reasoning_text(t), add_special_tokens=False)) for t in texts]
    fakes = [_random_tokens(tok, max(1, n), gen) for n in lengths]
    prefixes = [prompt + tok.encode(head + tok.decode(f) + tail, add_special_tokens=False) for f in fakes]
    ro = rl.sample_groups(pm.model, prefixes, group_size=1, max_new_tokens=ANSWER_TOKENS,
                          temperature=temperature, pad_id=pad, eos_ids=[tok.eos_token_id])
    answers = [tok.decode(ro.row_tokens(i), skip_special_tokens=True) for i in range(len(texts))]
    new = [head + tok.decode(f) + tail + a for f, a in zip(fakes, answers)]
    return new, [len(f) + int(n) for f, n in zip(fakes, ro.lengths.tolist())]


def _text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], clean_up_tokenization_spaces=False)


# ---- benchmark items as texts -------------------------------------------------------------

def default_item_files(repo_root: str | Path) -> dict[str, Path]:
    """The shared GSM8K / CommonsenseQA files (../shared/data next to the repo) that exist."""
    data = Path(repo_root).resolve().parent / "shared" / "data"
    return {name: data / f for name, f in ITEM_FILES.items() if (data / f).exists()}


def read_items(path: str | Path, limit: int = 500) -> list[tuple[str, str]]:
    """(label, text) for the first `limit` records of a GSM8K or CommonsenseQA .jsonl file:
    the question with its worked answer (GSM8K, calculator marks removed) or with the choices
    and the right one (CommonsenseQA), in the Q:/A: format of the benchmarks."""
    from lab.evaluation import benchmarks, prompts
    path = Path(str(path)).expanduser()
    kind = _item_kind(path)
    # the benchmark reader validates every record and says what is wrong with a bad file
    records = benchmarks.read_records(path, kind, max_lines=limit)
    out = []
    for i, r in enumerate(records):
        q = r["question"].strip()
        if kind == "gsm8k":
            solution = re.sub(r"<<[^>]*>>", "", r["answer"]).strip()
            solution = re.sub(r"\n?####\s*(.+)$", r"\nThe answer is \1.", solution)
            text = f"Q: {q}\nA: {solution}"
        else:
            labels, choices = list(r["choices"]["label"]), list(r["choices"]["text"])
            right = choices[labels.index(r["answerKey"])]
            text = prompts.csqa(q, labels, choices) + f" ({r['answerKey']}){prompts.csqa_continuation(right)}"
        out.append((f"{i}: {q[:90]}", text))
    return out


def _item_kind(path: Path) -> str:
    """'gsm8k' or 'csqa' from the first record's fields."""
    if not path.is_file():
        raise LabError(f"Item file {path} does not exist (give a GSM8K or CommonsenseQA .jsonl file).")
    try:
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        obj = json.loads(first) if first else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabError(f"{path} is not a .jsonl file of JSON objects ({e}).") from e
    if isinstance(obj, dict) and "answer" in obj:
        return "gsm8k"
    if isinstance(obj, dict) and "choices" in obj:
        return "csqa"
    raise LabError(f"{path} is neither GSM8K (fields question, answer) nor CommonsenseQA "
                   "(fields question, choices, answerKey).")
