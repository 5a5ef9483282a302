"""Corpora: the built-in math generator (`builtin`, or `builtin:easy` for its easy level), local .txt/.jsonl/.parquet files, or `hf:NAME`
(a Hugging Face dataset, when online), packed into fixed-length token windows.

Bad files fail early with a LabError naming the file and the problem.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from lab import limits, mathgen
from lab.errors import LabError, regular_file, storage_full
from lab.progress import Progress

MAX_LINE_CHARS = 5_000_000
BUILTIN = ("builtin", "builtin:math", "builtin:easy")     # the generator's corpora
SUFFIXES = (".txt", ".jsonl", ".parquet")


def load_documents(spec: str, *, n_docs: int = 0, text_field: str = "text", seed: int = 0) -> list[str]:
    """Documents of a corpus spec. n_docs: builtin count, or a cap for files (0 = all)."""
    spec = (spec or "").strip()
    if spec in ("builtin", "builtin:math"):
        return mathgen.documents(n_docs or 2000, seed)
    if spec == "builtin:easy":
        return mathgen.documents(n_docs or 2000, seed, level="easy")
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
    if spec == "builtin:easy":
        return "built-in math word problems, easy level (generated, offline)"
    docs = load_documents(spec, text_field=text_field)
    return f"{spec}: {len(docs)} documents"


def _corpus_file(path: Path) -> Path:
    """A corpus path, checked before it is opened: a regular file (a FIFO or a device would
    block the reader forever) of a size that fits in memory."""
    regular_file(path, "Corpus file")
    size = path.stat().st_size
    if size > limits.MAX_CORPUS_BYTES:
        raise LabError(f"Corpus file {path} is {size / 2**30:.1f} GiB, more than a run reads "
                       f"(limit {limits.MAX_CORPUS_BYTES / 2**30:.0f} GiB); use a sample of it.")
    return path


def _read_text(path: Path) -> str:
    raw = _corpus_file(path).read_bytes()
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
        if not path.exists() and not path.is_symlink():
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
    if text_field in obj:
        value = obj[text_field]
        held = "null" if value is None else f"{limits.short(value, 40)} ({type(value).__name__})"
        raise LabError(f"{where}: field {text_field!r} holds {held}, not text. Give every record "
                       "a text value, or set text_field to the field that holds the text.")
    raise LabError(f"{where}: no text field {text_field!r} (fields: {', '.join(map(str, obj)) or 'none'}). "
                   "Set text_field to the column that holds the text.")


def _parquet_documents(path: Path, text_field: str) -> list[str]:
    import pyarrow.parquet as pq
    _corpus_file(path)
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


UPLOAD_STEM_CHARS = 80     # file names stay far below the file system's 255-byte limit


def safe_upload_path(data_dir: str | Path, filename: str) -> Path:
    """Where an uploaded file is stored: inside <data_dir>/uploads, under a sanitised name
    (no folders, no '..', only [A-Za-z0-9._-], at most UPLOAD_STEM_CHARS before the suffix)."""
    import re
    base = Path(str(filename or "").replace("\\", "/")).name
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]", "_", base)).lstrip(".") or "upload"
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise LabError(f"Uploaded file {limits.short(filename)}: use a {', '.join(SUFFIXES)} file.")
    stem = name[:-len(suffix)].rstrip(".")[:UPLOAD_STEM_CHARS] or "upload"
    folder = (Path(data_dir) / "uploads").resolve()
    target = (folder / (stem + suffix)).resolve()
    if folder not in target.parents:
        raise LabError(f"Uploaded file name {limits.short(filename)} is not allowed.")
    return target


def save_upload(data_dir: str | Path, filename: str, content: bytes) -> Path:
    """Store an upload under its sanitised name plus a digest of its content: two different
    files of the same name never overwrite each other (a run's corpus cannot change under it),
    and the same file uploaded again is the same corpus. Every failure is a LabError."""
    import hashlib
    target = safe_upload_path(data_dir, filename)
    target = target.with_name(f"{target.stem}-{hashlib.sha256(content).hexdigest()[:16]}{target.suffix}")
    if target.is_file() and target.stat().st_size == len(content):
        return target            # already stored (a page rerun, or the same file again)
    tmp = target.with_name(target.name + f".{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(content)
        tmp.replace(target)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise storage_full(data_dir, e, f"store the upload {target.name}") or LabError(
            f"Could not store the upload {target.name} in {target.parent}: {e.strerror or e}.") from e
    return target
