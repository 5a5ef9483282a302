"""The built-in corpus: seeded, deterministic worked math word problems with prose solutions.

A small offline stand-in for OpenWebMath. Each problem is a chain of arithmetic steps about
one person and one kind of object; the solution walks through the steps in prose and ends
with "The answer is N." Splits:
- `train` / `test`: 2–4 steps, the training templates (test uses a disjoint seed range);
- `longer`: 5–7 steps, same templates (length shift);
- `format`: 2–4 steps, unseen templates: question-first, equation-style solution
  (format shift).

Levels: `standard` (above) and `easy`, a level a miniature model trained from scratch
partly solves within minutes: one-digit starts and operands, 1–2 steps (`longer`: 3–4),
multiplication only of values up to 12. On the easy level the evaluation splits are
disjoint from `train` by content, whatever the seeds: a problem's arithmetic chain (its
equations) is hashed into one of HOLDOUT_BUCKETS buckets; bucket 0 is held out (test,
longer, format only) and `train` never draws a chain from it.
"""
from __future__ import annotations

import random
import hashlib
from dataclasses import dataclass

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Keiko", "Liam", "Maya", "Noah", "Olu", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
THINGS = [("apple", "apples"), ("marble", "marbles"), ("book", "books"), ("stamp", "stamps"),
          ("shell", "shells"), ("card", "cards"), ("pencil", "pencils"), ("coin", "coins"),
          ("sticker", "stickers"), ("cookie", "cookies")]
SPLITS = ("train", "test", "longer", "format")
_SEED_OFFSET = {"train": 0, "test": 10_000_000, "longer": 20_000_000, "format": 30_000_000}
LEVELS = ("standard", "easy")
EASY_SALT = 7_777_777_777        # the easy level draws from other generator seeds
HOLDOUT_BUCKETS = 5             # easy level: 1 in 5 arithmetic chains is held out of `train`


@dataclass(frozen=True)
class Level:
    start: tuple[int, int]      # first value
    add: tuple[int, int]        # operand of "gets k more"
    mul: tuple[int, int]        # factor
    divisors: tuple[int, ...]
    steps: tuple[int, int]      # steps of train/test/format
    longer_steps: tuple[int, int]
    mul_max: int = 10**9        # multiply only values up to this


_LEVELS = {"standard": Level((3, 40), (2, 30), (2, 4), (2, 3, 4, 5), (2, 4), (5, 7)),
           "easy": Level((1, 9), (1, 9), (2, 3), (2, 3), (1, 2), (3, 4), mul_max=12)}


@dataclass
class Problem:
    question: str
    solution: str
    answer: int
    split: str

    @property
    def text(self) -> str:
        return f"Problem: {self.question}\nSolution: {self.solution}"


def _step(rng: random.Random, value: int, name: str, plural: str,
          lv: Level) -> tuple[str, str, int, str]:
    """One operation: (question clause, solution sentence, new value, equation)."""
    ops = ["add", "sub", "mul", "div"] if value > 1 else ["add", "mul"]
    if value > lv.mul_max:
        ops.remove("mul")
    op = rng.choice(ops)
    if op == "add":
        k = rng.randint(*lv.add)
        return (f"Then {name} gets {k} more {plural}.",
                f"After getting {k} more, {name} has {value} + {k} = {value + k} {plural}.",
                value + k, f"{value} + {k} = {value + k}")
    if op == "sub":
        k = rng.randint(1, value - 1) if value > 2 else 1
        return (f"Then {name} gives away {k} {plural}.",
                f"After giving away {k}, {name} has {value} - {k} = {value - k} {plural}.",
                value - k, f"{value} - {k} = {value - k}")
    if op == "mul":
        k = rng.randint(*lv.mul)
        return (f"Then the number of {plural} {name} has becomes {k} times as large.",
                f"Multiplying by {k} gives {value} x {k} = {value * k} {plural}.",
                value * k, f"{value} x {k} = {value * k}")
    divisors = [d for d in lv.divisors if value % d == 0]
    if not divisors:
        return _step(rng, value, name, plural, lv) if value > 1 else ("", "", value, "")
    k = rng.choice(divisors)
    return (f"Then {name} splits the {plural} into {k} equal groups and keeps one group.",
            f"One of {k} equal groups is {value} / {k} = {value // k} {plural}.",
            value // k, f"{value} / {k} = {value // k}")


def held_out(equations: list[str]) -> bool:
    """Whether an arithmetic chain belongs to the held-out bucket (easy level)."""
    digest = hashlib.sha256(" | ".join(equations).encode()).digest()
    return digest[0] % HOLDOUT_BUCKETS == 0


def _rng_seed(index: int, split: str, seed: int, level: str) -> int | str:
    """The generator seed of one problem. Integers as always for the standard level, except
    where a training seed would run into the evaluation splits' range (seed >= 10: seed 10's
    training problems would otherwise be math-test's items): those get a string seed."""
    value = seed * 1_000_003 + _SEED_OFFSET[split] + index
    if level != "standard":           # the splits are kept apart by content (held_out)
        return value + EASY_SALT
    if split == "train" and value >= _SEED_OFFSET["test"]:
        return f"train:{seed}:{index}"
    return value


def make_problem(index: int, split: str = "train", seed: int = 0, level: str = "standard") -> Problem:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; use one of {LEVELS}")
    lv = _LEVELS[level]
    rng = random.Random(_rng_seed(index, split, seed, level))
    while True:
        name = rng.choice(NAMES)
        _, plural = rng.choice(THINGS)
        n_steps = rng.randint(*(lv.longer_steps if split == "longer" else lv.steps))
        value = rng.randint(*lv.start)
        start = value
        clauses, sentences, equations = [], [], []
        for _ in range(n_steps):
            clause, sentence, value, eq = _step(rng, value, name, plural, lv)
            if clause:
                clauses.append(clause)
                sentences.append(sentence)
                equations.append(eq)
        # Standard level: seed ranges keep the splits apart. Easy level: the content does.
        if level == "standard" or held_out(equations) == (split != "train"):
            break
    if split == "format":
        question = (f"How many {plural} does {name} have at the end? At the start {name} has "
                    f"{start} {plural}. " + " ".join(c.replace("Then ", "Next, ", 1) for c in clauses))
        solution = "; ".join(equations) + f". So the result is {value}. The answer is {value}."
    else:
        question = (f"{name} has {start} {plural}. " + " ".join(clauses) +
                    f" How many {plural} does {name} have now?")
        solution = (f"{name} starts with {start} {plural}. " + " ".join(sentences) +
                    f" The answer is {value}.")
    return Problem(question=question, solution=solution, answer=value, split=split)


def problems(n: int, split: str = "train", seed: int = 0, level: str = "standard") -> list[Problem]:
    return [make_problem(i, split, seed, level) for i in range(n)]


def documents(n: int, seed: int = 0, level: str = "standard") -> list[str]:
    """The training corpus: n problems with solutions, as plain text documents."""
    return [p.text for p in problems(n, "train", seed, level)]
