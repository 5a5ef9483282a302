"""The built-in corpus: seeded, deterministic worked math word problems with prose solutions.

A small offline stand-in for OpenWebMath. Each problem is a chain of arithmetic steps about
one person and one kind of object; the solution walks through the steps in prose and ends
with "The answer is N." Splits:
- `train` / `test`: 2–4 steps, the training templates (test uses a disjoint seed range);
- `longer`: 5–7 steps, same templates (length shift);
- `format`: 2–4 steps, unseen templates: question-first, equation-style solution
  (format shift).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Keiko", "Liam", "Maya", "Noah", "Olu", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
THINGS = [("apple", "apples"), ("marble", "marbles"), ("book", "books"), ("stamp", "stamps"),
          ("shell", "shells"), ("card", "cards"), ("pencil", "pencils"), ("coin", "coins"),
          ("sticker", "stickers"), ("cookie", "cookies")]
SPLITS = ("train", "test", "longer", "format")
_SEED_OFFSET = {"train": 0, "test": 10_000_000, "longer": 20_000_000, "format": 30_000_000}


@dataclass
class Problem:
    question: str
    solution: str
    answer: int
    split: str

    @property
    def text(self) -> str:
        return f"Problem: {self.question}\nSolution: {self.solution}"


def _step(rng: random.Random, value: int, name: str, plural: str) -> tuple[str, str, int, str]:
    """One operation: (question clause, solution sentence, new value, equation)."""
    op = rng.choice(["add", "sub", "mul", "div"] if value > 1 else ["add", "mul"])
    if op == "add":
        k = rng.randint(2, 30)
        return (f"Then {name} gets {k} more {plural}.",
                f"After getting {k} more, {name} has {value} + {k} = {value + k} {plural}.",
                value + k, f"{value} + {k} = {value + k}")
    if op == "sub":
        k = rng.randint(1, value - 1) if value > 2 else 1
        return (f"Then {name} gives away {k} {plural}.",
                f"After giving away {k}, {name} has {value} - {k} = {value - k} {plural}.",
                value - k, f"{value} - {k} = {value - k}")
    if op == "mul":
        k = rng.randint(2, 4)
        return (f"Then the number of {plural} {name} has becomes {k} times as large.",
                f"Multiplying by {k} gives {value} x {k} = {value * k} {plural}.",
                value * k, f"{value} x {k} = {value * k}")
    divisors = [d for d in (2, 3, 4, 5) if value % d == 0]
    if not divisors:
        return _step(rng, value, name, plural) if value > 1 else ("", "", value, "")
    k = rng.choice(divisors)
    return (f"Then {name} splits the {plural} into {k} equal groups and keeps one group.",
            f"One of {k} equal groups is {value} / {k} = {value // k} {plural}.",
            value // k, f"{value} / {k} = {value // k}")


def make_problem(index: int, split: str = "train", seed: int = 0) -> Problem:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    rng = random.Random(seed * 1_000_003 + _SEED_OFFSET[split] + index)
    name = rng.choice(NAMES)
    _, plural = rng.choice(THINGS)
    n_steps = rng.randint(5, 7) if split == "longer" else rng.randint(2, 4)
    value = rng.randint(3, 40)
    start = value
    clauses, sentences, equations = [], [], []
    for _ in range(n_steps):
        clause, sentence, value, eq = _step(rng, value, name, plural)
        if clause:
            clauses.append(clause)
            sentences.append(sentence)
            equations.append(eq)
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


def problems(n: int, split: str = "train", seed: int = 0) -> list[Problem]:
    return [make_problem(i, split, seed) for i in range(n)]


def documents(n: int, seed: int = 0) -> list[str]:
    """The training corpus: n problems with solutions, as plain text documents."""
    return [p.text for p in problems(n, "train", seed)]
