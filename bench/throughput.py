"""Decoding and evaluation throughput, in each precision: what rollouts and evaluation get
out of the hardware.

    python -m bench.throughput [--model smollm2-135m] [--precision fp32,bf16] [--batch 8]
                               [--prompt-len 64] [--new-tokens 32] [--eval-items 16]
                               [--repeats 3] [--threads N] [--clock wall|cpu] [--json PATH]

Per precision (bf16 = autocast over the fp32 model, as in training), on the same prompts
(windows of the built-in corpus, cut to --prompt-len tokens):
- prefill: one forward over [batch, prompt-len] (logits of the last position only), tok/s;
- sampler: lab.rl.sample_groups (the RL rollouts' KV-cached loop), batch prompts, one
  completion each, --new-tokens tokens with no EOS (every row runs to the end), tok/s;
  `sampler+stop` adds RLP's stop string "</think>", checked at every step;
- generate: transformers' `generate` (greedy, KV cache) on the same prompts and length, tok/s;
- evaluation: the evaluation runner's GSM8K (generation with stop strings) and CSQA
  (log-likelihood of 5 choices) paths on the first --eval-items items of the public data in
  ../shared/data, items/s.
Each figure is the median of --repeats runs after one warm-up run. The table gives the
ratios sampler ÷ generate and sampler ÷ prefill (decoding's share of the forward rate at the
same batch), and each row's bf16 ÷ fp32 speed-up.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PRECISIONS = ("fp32", "bf16")


def _autocast(precision: str):
    import torch
    if precision == "bf16":
        return torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = time.perf_counter


def timed(fn: Callable[[], Any], repeats: int, sync: Callable[[], None]) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return statistics.median(times)


def measure(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig

    from lab import rl
    from lab.corpora import load_documents, pack
    from lab.models import load_model
    device = torch.device("cuda" if torch.cuda.is_available() and args.device != "cpu" else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    lm = load_model(args.model, seed=0)
    model, tok = lm.model.to(device).eval(), lm.tokenizer
    windows = pack(load_documents("builtin", n_docs=200, seed=0), tok, args.prompt_len)
    ids = windows[:args.batch].to(device)
    prompts = ids.tolist()
    pad = rl.pad_id_of(tok)
    B, P, N = ids.shape[0], ids.shape[1], args.new_tokens
    out: dict[str, Any] = {"precision": precision, "batch": B, "prompt_len": P, "new_tokens": N}

    def sample(stops=()):
        torch.manual_seed(0)
        return rl.sample_groups(model, prompts, group_size=1, max_new_tokens=N, temperature=1.0,
                                pad_id=pad, eos_ids=(), stop_strings=stops, tokenizer=tok)

    gcfg = GenerationConfig(max_new_tokens=N, min_new_tokens=N, do_sample=False, num_beams=1,
                            pad_token_id=pad, eos_token_id=None)
    with torch.inference_mode(), _autocast(precision):
        t = timed(lambda: model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1),
                  args.repeats, sync)
        out["prefill_tok_s"] = B * P / t
        ro = sample()
        assert int(ro.mask.sum()) == B * N, "every row should run to --new-tokens"
        out["sampler_tok_s"] = B * N / timed(sample, args.repeats, sync)
        out["sampler_stop_tok_s"] = B * N / timed(lambda: sample(("</think>",)), args.repeats, sync)
        mask = torch.ones_like(ids)
        out["generate_tok_s"] = B * N / timed(
            lambda: model.generate(input_ids=ids, attention_mask=mask, generation_config=gcfg),
            args.repeats, sync)
    if args.eval_items:
        out.update(eval_throughput(model, tok, device, args, precision, sync))
    return out


def eval_throughput(model, tok, device, args, precision: str, sync) -> dict[str, float]:
    """Items/s of the evaluation runner's GSM8K and CSQA paths (lab/evaluation/runner.py)."""
    from lab.evaluation import runner
    from lab.evaluation.benchmarks import load_items
    from lab.evaluation.engine import Engine
    from lab.evaluation.spec import EvalSpec
    engine = Engine(model, tok, device)
    out = {}
    for name, file, fn in (("gsm8k", "gsm8k_test.jsonl", runner._gsm8k),
                           ("csqa", "commonsenseqa_dev.jsonl", runner._csqa)):
        if not (DATA / file).exists():
            print(f"[throughput] {DATA / file} missing: {name} skipped", file=sys.stderr)
            continue
        items = load_items(name, str(DATA / file), limit=args.eval_items)
        spec = EvalSpec(model=args.model, benchmark=name, batch_size=args.batch,
                        max_new_tokens=args.eval_new_tokens)
        with _autocast(precision):
            t = timed(lambda: fn(engine, items, spec, None), max(1, args.repeats // 2), sync)
        out[f"eval_{name}_items_s"] = len(items) / t
    return out


def markdown(results: list[dict], env: dict) -> str:
    keys = [("prefill_tok_s", "prefill tok/s"), ("sampler_tok_s", "sampler tok/s"),
            ("sampler_stop_tok_s", "sampler + stop string tok/s"), ("generate_tok_s", "HF generate tok/s"),
            ("eval_gsm8k_items_s", "eval GSM8K items/s"), ("eval_csqa_items_s", "eval CSQA items/s")]
    r0 = results[0]
    lines = [f"{env['model']} on {env['device']}, {env['threads']} threads, clock {env['clock']}, batch {r0['batch']}, "
             f"prompt {r0['prompt_len']} tokens, {r0['new_tokens']} new tokens, load average "
             f"{env['loadavg_start']} → {env['loadavg_end']}.", ""]
    head = ["what"] + [r["precision"] for r in results] + \
           [f"{r['precision']} ÷ {r0['precision']}" for r in results[1:]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k, label in keys:
        if k not in r0:
            continue
        row = [label] + [f"{r[k]:.1f}" for r in results] + [f"{r[k] / r0[k]:.2f}" for r in results[1:]]
        lines.append("| " + " | ".join(row) + " |")
    for r in results:
        lines.append("")
        lines.append(f"{r['precision']}: sampler ÷ generate {r['sampler_tok_s'] / r['generate_tok_s']:.2f}, "
                     f"sampler ÷ prefill {r['sampler_tok_s'] / r['prefill_tok_s']:.3f}")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--precision", default="fp32,bf16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--eval-items", type=int, default=16, help="0 = no evaluation figures")
    p.add_argument("--eval-new-tokens", type=int, default=0,
                   help="GSM8K generation budget (0 = the benchmark's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--clock", default="wall", choices=tuple(CLOCK),
                   help="cpu: the process's CPU seconds, steadier on a loaded machine with --threads 1")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    args.precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    if not args.precisions or any(x not in PRECISIONS for x in args.precisions):
        p.error(f"--precision: comma-separated from {', '.join(PRECISIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    global clock
    clock = CLOCK[args.clock]
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    env = {"model": args.model, "threads": torch.get_num_threads(), "clock": args.clock,
           "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and args.device != "cpu"
           else "cpu", "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    results = [measure(args, prec) for prec in args.precisions]
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "args": vars(args), "results": results}, indent=1))
    print(markdown(results, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
