"""Answer extraction: final numbers (GSM8K, built-in math) and choice letters (CommonsenseQA).

Numbers are compared in a canonical form: commas between digit groups and a `$` are
dropped, a trailing sentence period is ignored, and the value is written without trailing
zeros ("18", "-3", "3.5"; "18.00" == "18"). Extraction rules, in order:

- numbers: the text is cut at the first stop string; then `#### N` (GSM8K's own answer
  format), `answer is N` (last occurrence), `\\boxed{N}`, and otherwise the first
  (`which="first"`) or last (`which="last"`) number in the text;
- letters: `answer is (X)`/`answer: X`, the first `(X)`, a leading bare letter followed by
  punctuation or the end ("B", "b", "B.", "C)"), the first standalone capital letter, and
  otherwise a choice whose text starts the generation.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# A number: optional sign (before or after a dollar sign), digits with optional
# thousands groups, optional decimals. Not preceded by a letter/digit (so "x2" is skipped).
_NUM = r"(?<![\w.])(?P<sign1>[-−])?\s?\$?\s?(?P<sign2>[-−])?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
NUMBER_RE = re.compile(_NUM)
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is|=|:)\s*:?\s*", re.IGNORECASE)
_HASH_RE = re.compile(r"####\s*")
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def cut(text: str, stops: tuple[str, ...] | list[str] = ()) -> str:
    """The text up to the first stop string (leading whitespace ignored when searching,
    so a generation that opens with a newline is not cut to nothing)."""
    lead = len(text) - len(text.lstrip())
    end = len(text)
    for s in stops:
        i = text.find(s, lead)
        if i != -1:
            end = min(end, i)
    return text[:end]


def canonical_number(raw: str) -> str | None:
    """'1,234.50' -> '1234.5', '$18' -> '18', '-3' -> '-3'; None when not a number."""
    m = NUMBER_RE.search(raw)
    return _canon(m) if m else None


def _canon(m: re.Match) -> str | None:
    neg = bool(m.group("sign1") or m.group("sign2"))
    digits = m.group("int").replace(",", "")
    frac = m.group("frac")
    try:
        value = Decimal(digits + ("." + frac if frac else ""))
    except InvalidOperation:
        return None
    if neg:
        value = -value
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def numbers(text: str) -> list[str]:
    """Every number in the text, canonical, in order."""
    out = []
    for m in NUMBER_RE.finditer(text):
        c = _canon(m)
        if c is not None:
            out.append(c)
    return out


def extract_number(text: str, *, which: str = "first", stops: tuple[str, ...] = ()) -> str | None:
    """The final numeric answer in a generation (canonical string), or None."""
    text = cut(text, stops)
    hits = list(_HASH_RE.finditer(text))
    if hits:
        found = numbers(text[hits[-1].end():])
        if found:
            return found[0]
    hits = list(_ANSWER_IS_RE.finditer(text))
    if hits:
        found = numbers(text[hits[-1].end():])
        if found:
            return found[0]
    boxed = _BOXED_RE.findall(text)
    if boxed:
        found = numbers(boxed[-1])
        if found:
            return found[0]
    found = numbers(text)
    if not found:
        return None
    return found[0] if which == "first" else found[-1]


def gsm8k_target(answer: str) -> str:
    """The canonical number after `####` in a GSM8K answer field."""
    if "####" not in answer:
        raise ValueError("GSM8K answer has no '#### N' line")
    value = canonical_number(answer.split("####")[-1])
    if value is None:
        raise ValueError(f"GSM8K answer has no number after '####': {answer[-40:]!r}")
    return value


def same_number(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return a == b


def extract_letter(text: str, labels: list[str] | tuple[str, ...] = ("A", "B", "C", "D", "E"),
                   texts: list[str] | tuple[str, ...] = (), stops: tuple[str, ...] = ()) -> str | None:
    """The chosen label in a generated multiple-choice answer, or None."""
    text = cut(text, stops)
    labels_u = [lab.upper() for lab in labels]
    cls = "".join(re.escape(lab) for lab in labels_u) or "A-E"
    low = cls.lower()
    patterns = [
        re.compile(rf"(?i:answer)\s*(?:is|:)\s*:?\s*\(?([{cls}])\b"),
        re.compile(rf"(?i:answer)\s*(?:is|:)\s*:?\s*\(?([{low}])(?:\)|[.,;:]|\s*$)"),
        re.compile(rf"\(([{cls}{low}])\)"),
        re.compile(rf"^\s*([{cls}{low}])\s*(?:[.):,;]|$|\n)"),
        # A standalone capital; "A" followed by a lowercase word is the article.
        re.compile(rf"(?<![\w'])([{cls}])(?![\w'])(?<!A(?=\s+[a-z]))"),
    ]
    for pat in patterns:
        m = pat.search(text)
        if m:
            letter = m.group(1).upper()
            if letter in labels_u:
                return letter
    body = text.strip().lower()
    if body and texts:
        # Longest matching choice first, so "new york" beats "new".
        for lab, choice in sorted(zip(labels_u, texts), key=lambda p: -len(p[1])):
            c = choice.strip().lower()
            if c and body.startswith(c):
                return lab
    return None
