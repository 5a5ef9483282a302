"""Corpora: the built-in math generator, local .txt/.jsonl/.parquet files, or `hf:NAME`
(a Hugging Face dataset, when online), packed into fixed-length token windows.

Bad files fail early with a LabError naming the file and the problem.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lab import mathgen
from lab.errors import LabError
from lab.progress import Progress

MAX_LINE_CHARS = 5_000_000
SUFFIXES = (".txt", ".jsonl", ".parquet")


def load_documents(spec: str, *, n_docs: int = 0, text_field: str = "text", seed: int = 0) -> list[str]:
    """Documents of a corpus spec. n_docs: builtin count, or a cap for files (0 = all)."""
    spec = (spec or "").strip()
    if spec in ("builtin", "builtin:math"):
        return mathgen.documents(n_docs or 2000, seed)
    if spec.startswith("hf:"):
        docs = _hf_documents(spec[3:], text_field, n_docs)
    else:
        docs = _file_documents(Path(spec).expanduser(), text_field)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise LabError(f"Corpus {spec} holds no text.")
    return docs[:n_docs] if n_docs else docs


def check_corpus(spec: str, text_field: str = "text") -> str:
    """Validate a corpus spec before a job starts; returns a short description."""
    spec = (spec or "").strip()
    if spec in ("builtin", "builtin:math"):
        return "built-in math word problems (generated, offline)"
    docs = load_documents(spec, text_field=text_field)
    return f"{spec}: {len(docs)} documents"


def _read_text(path: Path) -> str:
    if not path.exists():
        raise LabError(f"Corpus file {path} does not exist.")
    if path.is_dir():
        raise LabError(f"Corpus path {path} is a folder; give a .txt, .jsonl or .parquet file.")
    raw = path.read_bytes()
    if not raw.strip():
        raise LabError(f"Corpus file {path} is empty.")
    if b"\x00" in raw[:8192]:
        raise LabError(f"Corpus file {path} looks binary (it contains NUL bytes), not text.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LabError(f"Corpus file {path} is not UTF-8 text (invalid byte at offset {e.start}); "
                       "re-save it as UTF-8.") from e
    longest = max((len(line) for line in text.splitlines()), default=0)
    if longest > MAX_LINE_CHARS:
        raise LabError(f"Corpus file {path} has a line of {longest:,} characters (limit "
                       f"{MAX_LINE_CHARS:,}); split it into documents or paragraphs.")
    return text


def _file_documents(path: Path, text_field: str) -> list[str]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        if not path.exists():
            raise LabError(f"Corpus {path} is neither 'builtin', an 'hf:NAME' dataset, nor an "
                           "existing file.")
        raise LabError(f"Corpus file {path} has an unsupported type {suffix or '(none)'}; "
                       f"use one of {', '.join(SUFFIXES)}.")
    if suffix == ".parquet":
        return _parquet_documents(path, text_field)
    text = _read_text(path)
    if suffix == ".txt":
        # Blank lines separate documents; a file without them is one long document.
        return [d.strip() for d in text.split("\n\n") if d.strip()]
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise LabError(f"Corpus file {path}, line {n}: not valid JSON ({e.msg}).") from e
        docs.append(_record_text(obj, text_field, f"Corpus file {path}, line {n}"))
    return docs


def _record_text(obj, text_field: str, where: str) -> str:
    if not isinstance(obj, dict):
        raise LabError(f"{where}: expected a JSON object with a {text_field!r} field.")
    if isinstance(obj.get(text_field), str):
        return obj[text_field]
    if isinstance(obj.get("question"), str) and isinstance(obj.get("answer"), str):
        # GSM8K-style records: drop calculator annotations like <<16-3-4=9>>.
        import re
        answer = re.sub(r"<<[^>]*>>", "", obj["answer"])
        return f"Problem: {obj['question']}\nSolution: {answer}"
    raise LabError(f"{where}: no text field {text_field!r} (fields: {', '.join(map(str, obj)) or 'none'}). "
                   "Set text_field to the column that holds the text.")


def _parquet_documents(path: Path, text_field: str) -> list[str]:
    import pyarrow.parquet as pq
    if not path.exists():
        raise LabError(f"Corpus file {path} does not exist.")
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for bad files
        raise LabError(f"Corpus file {path} is not a readable Parquet file ({str(e).splitlines()[0]}).") from e
    if text_field not in table.column_names:
        raise LabError(f"Corpus file {path} has no column {text_field!r} (columns: "
                       f"{', '.join(table.column_names)}). Set text_field.")
    return [t for t in table.column(text_field).to_pylist() if isinstance(t, str)]


def _hf_documents(name: str, text_field: str, n_docs: int) -> list[str]:
    try:
        import datasets
    except ImportError as e:
        raise LabError("Hugging Face datasets need `pip install datasets` and a network.") from e
    dname, _, split = name.partition("/split=")
    try:
        ds = datasets.load_dataset(dname, split=split or "train", streaming=True)
        out = []
        for i, rec in enumerate(ds):
            if n_docs and i >= n_docs:
                break
            out.append(_record_text(rec, text_field, f"dataset {dname}"))
        return out
    except LabError:
        raise
    except Exception as e:  # noqa: BLE001
        raise LabError(f"Could not load dataset {dname!r} from the Hugging Face hub "
                       f"({str(e).splitlines()[0][:200]}). Offline, use a local file.") from e


def pack(docs: list[str], tokenizer, seq_len: int, progress: Progress | None = None) -> torch.Tensor:
    """Tokenise documents, join them with EOS, and cut into [N, seq_len] windows."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    progress = progress or Progress("packing corpus", total=len(docs), stream=None)
    chunk = 256
    for i in range(0, len(docs), chunk):
        for toks in tokenizer(docs[i:i + chunk], add_special_tokens=False)["input_ids"]:
            ids.extend(toks)
            ids.append(eos)
        progress.update(min(i + chunk, len(docs)))
    n = len(ids) // seq_len
    if n == 0:
        raise LabError(f"The corpus has {len(ids)} tokens, fewer than one window of seq_len={seq_len}; "
                       "add text or lower seq_len.")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def safe_upload_path(data_dir: str | Path, filename: str) -> Path:
    """Where an uploaded file is stored: inside <data_dir>/uploads, under a sanitised name
    (no folders, no '..', only [A-Za-z0-9._-])."""
    import re
    base = Path(filename or "").name
    stem = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "_", base)).lstrip(".") or "upload"
    if Path(stem).suffix.lower() not in SUFFIXES:
        raise LabError(f"Uploaded file {filename!r}: use a {', '.join(SUFFIXES)} file.")
    folder = (Path(data_dir) / "uploads").resolve()
    target = (folder / stem).resolve()
    if folder not in target.parents:
        raise LabError(f"Uploaded file name {filename!r} is not allowed.")
    return target


def save_upload(data_dir: str | Path, filename: str, content: bytes) -> Path:
    target = safe_upload_path(data_dir, filename)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    tmp.write_bytes(content)
    tmp.replace(target)
    return target
