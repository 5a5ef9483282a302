"""The exact prompts every benchmark uses (docs/evaluation.md shows them with examples).

They follow Quiet-STaR's zero-shot evaluation (github.com/ezelikman/quiet-star,
`eval_helpers.py` and `zero-shotcot-eval.py`): a plain-text "Q: ...\\nA:" format, no chat
template, no few-shot examples, so a base model, an instruct model and every checkpoint
trained on plain text read the same string. The built-in math problems use the corpus'
own "Problem: ...\\nSolution:" format, so the `test` split is in-distribution for a model
trained on the built-in corpus.

Change a prompt only together with PROMPT_VERSION: it is stored in every eval's config,
and scores taken with different prompt versions are not comparable.
"""
from __future__ import annotations

PROMPT_VERSION = 1

ANSWER_MARKER = "\nA:"
# Zero-shot chain of thought, two stages (Kojima et al. 2022, as in Quiet-STaR's script).
COT_TRIGGER = " Let's think step by step."
COT_FINAL = "\nTherefore, the answer (arabic numerals) is"

# Where a generation is cut. Direct answers are one line; leading whitespace does not count,
# so " \n18" is not cut to nothing.
DIRECT_STOPS = ("\n",)
QA_STOPS = ("\nQ:", "\n\n")
COT_STOPS = ("\nQ:", "\n\n\n")
MATH_STOPS = ("\nProblem:", "\n\n")


def gsm8k_direct(question: str) -> str:
    """GSM8K, direct answer: `Q: {question}\\nA:` then the number is generated."""
    return f"Q: {question.strip()}{ANSWER_MARKER}"


def gsm8k_cot(question: str) -> str:
    """GSM8K, stage 1 of zero-shot CoT: `Q: {question}\\nA: Let's think step by step.`"""
    return f"Q: {question.strip()}{ANSWER_MARKER}{COT_TRIGGER}"


def gsm8k_cot_final(stage1_prompt: str, reasoning: str) -> str:
    """Stage 2: the stage-1 prompt, the generated reasoning (cut at a stop string and
    right-stripped), then `\\nTherefore, the answer (arabic numerals) is`."""
    return stage1_prompt + reasoning.rstrip() + COT_FINAL


def csqa(question: str, labels: list[str], texts: list[str]) -> str:
    """CommonsenseQA, one prompt for both modes:

        Q: {question}
        (A) {choice A}
        ...
        (E) {choice E}
        A:
    """
    lines = "\n".join(f"({lab}) {txt}" for lab, txt in zip(labels, texts))
    return f"Q: {question.strip()}\n{lines}{ANSWER_MARKER}"


def csqa_continuation(text: str) -> str:
    """What is scored after the CSQA prompt in log-likelihood mode: a space, then the
    choice's text (not its letter)."""
    return " " + text.strip()


def math_problem(question: str) -> str:
    """Built-in math splits: the corpus format `Problem: {question}\\nSolution:`."""
    return f"Problem: {question.strip()}\nSolution:"
