"""The benchmarks: what each one reads, how its items are built, and its defaults.

| name        | items                                   | mode    | metric                               |
|-------------|-----------------------------------------|---------|--------------------------------------|
| gsm8k       | GSM8K jsonl (or `hf:`)                  | direct  | exact match on the final number      |
| gsm8k-cot   | GSM8K jsonl (or `hf:`)                  | cot     | exact match, two-stage zero-shot CoT |
| csqa        | CommonsenseQA jsonl (or `hf:`)          | loglik  | argmax of the choices' log-likelihood|
| csqa-gen    | CommonsenseQA jsonl (or `hf:`)          | gen     | exact match on the generated letter  |
| math-test   | built-in generator, `test` split        | gen     | exact match on the final number,     |
|             |                                         |         | plus teacher-forced answer/solution  |
|             |                                         |         | NLL per item (teacher_forced.py)     |
| math-longer | built-in generator, `longer` split      | gen     | (length shift: 5–7 steps)            |
| math-format | built-in generator, `format` split      | gen     | (format shift: unseen templates)     |
| heldout-nll | built-in `test` documents, or a corpus  | nll     | mean NLL per token (nats), overall   |
|             |                                         |         | and on the top-20 % entropy tokens   |
| easy-test, easy-longer, easy-format, easy-heldout-nll: the same on the generator's easy     |
| level (corpus `builtin:easy`, for the mini models; test items never share an arithmetic     |
| chain with the training split, lab/mathgen.py)                                              |

Each benchmark is one record of BENCHMARKS: its data, mode, generation budget, whether
higher is better, and its `Scoring` (lab/evaluation/scoring.py: the scoring function, the
primary metric's name, per-item secondary metrics, passes per item). A record without an
explicit scoring gets its data kind's (SCORING_BY_DATA).

Items are taken in file (or generator) order; `limit` keeps the first N, so two evals
with the same data and limit score the same items and can be compared pair by pair.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import mathgen
from lab.errors import LabError
from lab.evaluation import extract, prompts, scoring
from lab.evaluation.scoring import Scoring

# The scoring of benchmarks that do not name one: every generator math benchmark and every
# held-out NLL benchmark is scored the same way.
SCORING_BY_DATA = {"builtin-math": scoring.MATH, "corpus": scoring.HELDOUT_NLL}


@dataclass(frozen=True)
class Benchmark:
    name: str
    mode: str            # stored in evals.mode
    data: str            # "gsm8k" | "csqa" | "builtin-math" | "corpus"
    max_new_tokens: int  # default generation budget (0 = no generation)
    higher_is_better: bool = True
    split: str = ""      # built-in math split
    level: str = "standard"  # built-in generator level (lab.mathgen.LEVELS)
    description: str = ""
    scoring: Scoring | None = None   # None: SCORING_BY_DATA[data]
    chance: float | None = None      # the score of guessing at random (drawn on score charts)

    def __post_init__(self) -> None:
        if self.scoring is None:
            object.__setattr__(self, "scoring", SCORING_BY_DATA[self.data])

    @property
    def metric(self) -> str:
        return self.scoring.metric

    @property
    def generates(self) -> bool:
        """Whether scoring generates text (slow) rather than only scoring given text."""
        return self.max_new_tokens > 0


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("gsm8k", "direct", "gsm8k", 32, scoring=scoring.GSM8K,
              description="GSM8K, zero-shot direct answer; exact match on the final number"),
    Benchmark("gsm8k-cot", "cot", "gsm8k", 256, scoring=scoring.GSM8K_COT,
              description="GSM8K, zero-shot chain of thought (two stages); exact match"),
    Benchmark("csqa", "loglik", "csqa", 0, scoring=scoring.CSQA, chance=0.2,
              description="CommonsenseQA, choice with the highest log-likelihood"),
    Benchmark("csqa-gen", "gen", "csqa", 8, scoring=scoring.CSQA_GEN, chance=0.2,
              description="CommonsenseQA, generated letter; exact match"),
    Benchmark("math-test", "gen", "builtin-math", 128, split="test",
              description="Built-in math problems, in-distribution (2-4 steps)"),
    Benchmark("math-longer", "gen", "builtin-math", 224, split="longer",
              description="Built-in math problems, length shift (5-7 steps)"),
    Benchmark("math-format", "gen", "builtin-math", 128, split="format",
              description="Built-in math problems, format shift (unseen templates)"),
    Benchmark("heldout-nll", "nll", "corpus", 0, higher_is_better=False,
              description="Held-out corpus NLL per token, overall and on forking tokens"),
    Benchmark("easy-test", "gen", "builtin-math", 64, split="test", level="easy",
              description="Built-in math problems, easy level, in-distribution (1-2 steps)"),
    Benchmark("easy-longer", "gen", "builtin-math", 128, split="longer", level="easy",
              description="Built-in math problems, easy level, length shift (3-4 steps)"),
    Benchmark("easy-format", "gen", "builtin-math", 64, split="format", level="easy",
              description="Built-in math problems, easy level, format shift (unseen templates)"),
    Benchmark("easy-heldout-nll", "nll", "corpus", 0, higher_is_better=False, level="easy",
              description="Held-out easy-level NLL per token, overall and on forking tokens"),
]}

# The generator's math benchmarks, and the held-out NLL ones (a corpus, no generation).
MATH_BENCHMARKS = tuple(n for n, b in BENCHMARKS.items() if b.data == "builtin-math")
HELDOUT_BENCHMARKS = tuple(n for n, b in BENCHMARKS.items() if b.data == "corpus")

# Items when limit = 0 on the generator: 1,000 keeps a 95 % interval on accuracy to about
# +-3 points (1.96 * sqrt(0.25 / 1000) = 0.031 at the worst case p = 0.5).
BUILTIN_N = {"builtin-math": 1000, "corpus": 1000}
BUILTIN_SEED = 0                                     # fixed: every eval sees the same items
HELDOUT_MAX_TOKENS = 1024                            # documents are cut to this many tokens
FORKING_RHO = 0.2                                    # share of tokens counted as forking

REQUIRED = {
    "gsm8k": ("question", "answer"),
    "csqa": ("question", "choices", "answerKey"),
}
FORMAT_NAMES = {"gsm8k": "GSM8K", "csqa": "CommonsenseQA"}
HF_DEFAULTS = {"gsm8k": ("main", "test"), "csqa": (None, "validation")}


@dataclass
class Item:
    id: str
    prompt: str = ""
    target: str = ""
    labels: list[str] = field(default_factory=list)   # CSQA choice labels
    texts: list[str] = field(default_factory=list)    # CSQA choice texts
    meta: dict[str, Any] = field(default_factory=dict)


# ---- data files -------------------------------------------------------------------------
def _is_builtin(data: str | None) -> bool:
    from lab.corpora import BUILTIN
    return data is None or str(data).strip() in ("",) + BUILTIN


def _record_problem(obj: Any, kind: str) -> str | None:
    """What is wrong with one record for this benchmark kind (None when it is fine)."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    missing = [f for f in REQUIRED[kind] if f not in obj]
    if missing:
        return f"missing field(s) {', '.join(map(repr, missing))} (it has: {', '.join(map(str, obj)) or 'none'})"
    if not isinstance(obj["question"], str):
        return "'question' is not a string"
    if kind == "gsm8k":
        if not isinstance(obj["answer"], str) or "####" not in obj["answer"]:
            return "'answer' does not end with a '#### <number>' line"
        try:
            extract.gsm8k_target(obj["answer"])
        except ValueError as e:
            return str(e)
    else:
        ch = obj["choices"]
        if not (isinstance(ch, dict) and isinstance(ch.get("label"), list)
                and isinstance(ch.get("text"), list) and len(ch["label"]) == len(ch["text"])
                and len(ch["label"]) >= 2):
            return "'choices' must be {\"label\": [...], \"text\": [...]} with matching lists"
        if obj["answerKey"] not in ch["label"]:
            return f"answerKey {obj['answerKey']!r} is not one of the labels {ch['label']}"
    return None


def _guess_format(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    for kind, name in FORMAT_NAMES.items():
        if all(f in obj for f in REQUIRED[kind]):
            bench = "gsm8k or gsm8k-cot" if kind == "gsm8k" else "csqa or csqa-gen"
            return f" It looks like a {name} file: use --benchmark {bench}."
    return ""


def _read_jsonl(path: Path, kind: str, max_lines: int = 0) -> list[dict]:
    """Parse and validate a benchmark file (only the first `max_lines` records when > 0)."""
    name = FORMAT_NAMES[kind]
    if not path.exists():
        raise LabError(f"{name} file {path} does not exist.")
    if path.is_dir():
        raise LabError(f"{name} path {path} is a folder; give a .jsonl file.")
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise LabError(f"{name} file {path} should be a .jsonl file (one JSON object per line).")
    records = []
    try:
        with path.open("r", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise LabError(f"{name} file {path}, line {n}: not valid JSON ({e.msg}); "
                                   "expected one JSON object per line.") from e
                bad = _record_problem(obj, kind)
                if bad:
                    raise LabError(f"{path} is not a {name} file: line {n} is {bad}."
                                   f"{_guess_format(obj)} Expected fields: "
                                   f"{', '.join(REQUIRED[kind])}.")
                records.append(obj)
                if max_lines and len(records) >= max_lines:
                    break
    except UnicodeDecodeError as e:
        raise LabError(f"{name} file {path} is not UTF-8 text.") from e
    if not records:
        raise LabError(f"{name} file {path} holds no records.")
    return records


def read_records(path: str | Path, kind: str, max_lines: int = 0) -> list[dict]:
    """The validated records of a GSM8K (`kind="gsm8k"`) or CommonsenseQA (`"csqa"`) .jsonl
    file; LabError naming the file, line and missing fields when it is not one."""
    return _read_jsonl(Path(str(path)).expanduser(), kind, max_lines)


def _read_hf(spec: str, kind: str, limit: int) -> list[dict]:
    """`hf:NAME[:CONFIG][@SPLIT]`, e.g. hf:openai/gsm8k, hf:tau/commonsense_qa@validation."""
    body = spec[3:]
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    dconfig, dsplit = HF_DEFAULTS[kind]
    try:
        import datasets
    except ImportError as e:
        raise LabError("Hugging Face datasets need `pip install datasets` and a network; "
                       "offline, give a local .jsonl file.") from e
    try:
        ds = datasets.load_dataset(name, config or dconfig, split=split or dsplit)
        records = [dict(r) for i, r in zip(range(limit or len(ds)), ds)]
    except Exception as e:  # noqa: BLE001
        raise LabError(f"Could not load dataset {name!r} from the Hugging Face hub "
                       f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}). "
                       "Offline, give a local .jsonl file.") from e
    for n, obj in enumerate(records, 1):
        bad = _record_problem(obj, kind)
        if bad:
            raise LabError(f"Dataset {name}: record {n} is {bad}.{_guess_format(obj)}")
    return records


def check_data(benchmark: str, data: str | None) -> list[str]:
    """Problems with a benchmark's data setting (cheap: reads the first records only)."""
    b = BENCHMARKS[benchmark]
    out: list[str] = []
    if b.data in ("gsm8k", "csqa"):
        if _is_builtin(data):
            out.append(f"benchmark {benchmark} needs data: a {FORMAT_NAMES[b.data]} .jsonl file "
                       f"(e.g. ../shared/data/{'gsm8k_test' if b.data == 'gsm8k' else 'commonsenseqa_dev'}.jsonl) "
                       "or an hf:NAME dataset")
        elif not str(data).startswith("hf:"):
            try:
                _read_jsonl(Path(str(data)).expanduser(), b.data, max_lines=20)
            except LabError as e:
                out.append(str(e))
    elif b.data == "builtin-math":
        if not _is_builtin(data):
            out.append(f"benchmark {benchmark} uses the built-in problem generator "
                       f"(split {b.split!r}); leave data empty (got {data!r})")
    elif b.data == "corpus" and not _is_builtin(data):
        from lab.corpora import check_corpus
        try:
            check_corpus(str(data))
        except LabError as e:
            out.append(str(e))
    return out


# ---- items ------------------------------------------------------------------------------
def load_items(benchmark: str, data: str | None, limit: int = 0) -> list[Item]:
    b = BENCHMARKS[benchmark]
    if b.data in ("gsm8k", "csqa"):
        if _is_builtin(data):
            raise LabError(check_data(benchmark, data)[0])
        data = str(data)
        records = (_read_hf(data, b.data, limit) if data.startswith("hf:")
                   else _read_jsonl(Path(data).expanduser(), b.data))
        records = records[:limit] if limit else records
        if b.data == "gsm8k":
            return [_gsm8k_item(i, r, cot=(b.mode == "cot")) for i, r in enumerate(records)]
        return [_csqa_item(i, r) for i, r in enumerate(records)]
    if b.data == "builtin-math":
        n = limit or BUILTIN_N["builtin-math"]
        return [Item(id=f"{b.split}-{i}", prompt=prompts.math_problem(p.question),
                     target=str(p.answer), meta={"question": p.question, "solution": p.solution})
                for i, p in enumerate(mathgen.problems(n, b.split, BUILTIN_SEED, b.level))]
    # heldout-nll
    if _is_builtin(data):
        n = limit or BUILTIN_N["corpus"]
        docs = [p.text for p in mathgen.problems(n, "test", BUILTIN_SEED, b.level)]
    else:
        from lab.corpora import load_documents
        docs = load_documents(str(data), n_docs=limit)
    return [Item(id=f"doc-{i}", prompt=d) for i, d in enumerate(docs)]


def _gsm8k_item(i: int, r: dict, cot: bool) -> Item:
    q = r["question"]
    return Item(id=str(r.get("id", i)), prompt=prompts.gsm8k_cot(q) if cot else prompts.gsm8k_direct(q),
                target=extract.gsm8k_target(r["answer"]), meta={"question": q})


def _csqa_item(i: int, r: dict) -> Item:
    labels = [str(x) for x in r["choices"]["label"]]
    texts = [str(x) for x in r["choices"]["text"]]
    return Item(id=str(r.get("id", i)), prompt=prompts.csqa(r["question"], labels, texts),
                target=str(r["answerKey"]), labels=labels, texts=texts,
                meta={"question": r["question"]})
