"""Evaluation: benchmarks, paired comparisons and the `eval` command (docs/evaluation.md).

    from lab.evaluation import EvalSpec, run_eval, compare
    df = run_eval(EvalSpec(model="smollm2-135m", benchmark="csqa",
                           data="../shared/data/commonsenseqa_dev.jsonl", limit=100), store)
"""
from lab.evaluation.benchmarks import BENCHMARKS
from lab.evaluation.runner import (add_cli_args, cli_main, compare, resolve_model_spec,
                                   run_eval)
from lab.evaluation.spec import THOUGHT_MODES, EvalSpec

__all__ = ["BENCHMARKS", "EvalSpec", "THOUGHT_MODES", "add_cli_args", "cli_main", "compare",
           "resolve_model_spec", "run_eval"]
