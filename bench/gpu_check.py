"""The GPU check, ready to run in one go when a GPU machine is lent (minutes count there).

    python -m bench.gpu_check [OUT_DIR] [--dry-run] [--only STEP,...] [--budget-s S]

Everything goes under OUT_DIR (default $OUT, else ./gpu-check-out): one log per step in
logs/, the lab's data folder (runs, evals) in data/, the benchmarks' JSON and Markdown, and
summary.md / summary.json with each step's status, wall time and headline figures. A step
that fails is recorded and the check goes on with the next; the exit status is non-zero when
any step failed.

Steps (sizes for SmolLM2-135M in bf16 on one H100/H200; --dry-run swaps in tiny-random, tiny
sizes and the CPU, so the whole path is exercised here first):
1. env: torch, CUDA, the GPUs, bf16 support, what `auto` precision resolves to.
2. ntp-mfu: the cost benchmark's NTP step at batch 16 × 1024, bf16, MFU against --peak-tflops.
3. cost: every objective's step on the same batch (8 × 256), bf16, time ÷ NTP, peak memory.
4. throughput: prefill, KV-cached sampler, HF generate and evaluation items/s, fp32 and bf16.
5. train-<objective>: one short real training job per objective through the job system
   (`python -m lab train`, the supervisor and `accelerate launch`), 10 steps.
6. train-multi-gpu: with 2 or more GPUs, an NTP job on 2 of them (`--num-gpus 2`).
7. eval-csqa: the evaluation of 200 CSQA items (`python -m lab eval`) on the GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OBJECTIVES = ("ntp", "quiet-star", "rlp", "rpt")

# (GPU sizes, --dry-run sizes)
SIZES = {
    "model": ("smollm2-135m", "tiny-random"),
    "mfu_batch": (("16", "1024"), ("2", "32")),
    "cost_batch": (("8", "256"), ("1", "32")),
    "tp": (["--batch", "16", "--prompt-len", "128", "--new-tokens", "64", "--eval-items", "32"],
           ["--batch", "2", "--prompt-len", "16", "--new-tokens", "3", "--eval-items", "2",
            "--eval-new-tokens", "4", "--repeats", "1"]),
    "train": (["--seq-len", "256", "--batch-size", "8", "--max-steps", "10"],
              ["--seq-len", "32", "--batch-size", "1", "--max-steps", "2", "--corpus-docs", "40"]),
    "eval_limit": ("200", "4"),
}
# Small objective settings for the dry run (the GPU run uses each objective's defaults).
DRY_PARAMS = {"quiet-star": ["n_ahead=3", "n_ahead_talk=2", "n_passes=1"],
              "rlp": ["group_size=2", "max_thought_tokens=3"],
              "rpt": ["group_size=2", "max_new_tokens=3", "warmup_steps_format=1"]}


def size(key: str, dry: bool):
    return SIZES[key][1 if dry else 0]


def env_info() -> dict[str, Any]:
    import torch
    import transformers

    from lab import precision
    cuda = torch.cuda.is_available()
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            "bf16_gpu": precision.cuda_has_bf16(), "cpu_bf16_flags": list(precision.cpu_bf16_flags()),
            "auto_resolves_to": precision.resolve("auto", "cuda" if cuda else "cpu"),
            "cpu_count": os.cpu_count()}


def plan(args: argparse.Namespace, out: Path) -> list[tuple[str, list[str], int]]:
    """(step name, command, timeout s) in order."""
    dry, py = args.dry_run, sys.executable
    model = size("model", dry)
    device = ["--device", "cpu"] if dry else []
    data = ["--data-dir", str(out / "data")]
    steps: list[tuple[str, list[str], int]] = []
    b, L = size("mfu_batch", dry)
    steps.append(("ntp-mfu", [py, "-m", "bench.benchmark", "--models", model, "--objectives", "ntp",
                              "--batch", b, "--seq-len", L, "--steps", "3", "--warmup", "1",
                              "--precision", "bf16", "--peak-tflops", str(args.peak_tflops),
                              "--json", str(out / "ntp_mfu.json"), *device], 120))
    b, L = size("cost_batch", dry)
    cost_cases = "ntp,quiet-star,rlp,rpt,rpt-format"
    cost = [py, "-m", "bench.benchmark", "--models", model, "--objectives", cost_cases, "--batch", b,
            "--seq-len", L, "--steps", "2" if not dry else "1", "--warmup", "1" if not dry else "0",
            "--precision", "bf16", "--peak-tflops", str(args.peak_tflops), "--json", str(out / "cost.json"),
            *device]
    if dry:
        params = out / "dry_params.json"
        params.write_text(json.dumps({"quiet-star": {"n_ahead": 3, "n_ahead_talk": 2, "n_passes": 1},
                                      "rlp": {"group_size": 2, "max_thought_tokens": 3},
                                      "rpt": {"group_size": 2, "max_new_tokens": 3},
                                      "rpt-format": {"group_size": 2, "max_new_tokens": 3}}))
        cost += ["--params-json", str(params)]
    steps.append(("cost", cost, 150))
    steps.append(("throughput", [py, "-m", "bench.throughput", "--model", model, *size("tp", dry),
                                 "--json", str(out / "throughput.json"), *device], 90))
    for obj in OBJECTIVES:
        params = [x for p in (DRY_PARAMS.get(obj, []) if dry else []) for x in ("--param", p)]
        steps.append((f"train-{obj}", [py, "-m", "lab", "train", *data, "--objective", obj, "--model", model,
                                       "--corpus", "builtin", *size("train", dry), "--checkpoint-every", "0",
                                       "--name", f"gpu-check {obj}", *(["--device", "cpu"] if dry else
                                                                       ["--device", "gpu"]), *params], 120))
    if args.gpus >= 2:
        steps.append(("train-multi-gpu", [py, "-m", "lab", "train", *data, "--objective", "ntp", "--model", model,
                                          "--corpus", "builtin", *size("train", dry), "--checkpoint-every", "0",
                                          "--device", "gpu", "--num-gpus", "2", "--name", "gpu-check 2 GPUs"], 120))
    steps.append(("eval-csqa", [py, "-m", "lab", "eval", *data, "--model", model, "--benchmark", "csqa",
                                "--data", str(DATA / "commonsenseqa_dev.jsonl"), "--limit", size("eval_limit", dry),
                                "--batch-size", "32" if not dry else "2", "--device", "cpu" if dry else "gpu"], 120))
    if args.only:
        keep = set(args.only.split(","))
        steps = [s for s in steps if s[0] in keep]
    return steps


def headline(name: str, out: Path) -> str:
    """A step's key figures, read back from what it wrote."""
    try:
        if name in ("ntp-mfu", "cost"):
            res = json.loads((out / ("ntp_mfu.json" if name == "ntp-mfu" else "cost.json")).read_text())
            parts = []
            for c in res["models"][0]["cases"]:
                if "error" in c:
                    parts.append(f"{c['case']} failed")
                    continue
                mfu = f", MFU {c['mfu']:.1%}" if c.get("mfu") is not None else ""
                parts.append(f"{c['case']} {c['step_time_s']:.3f} s ×{c['time_ratio']:.2f} NTP, "
                             f"{c['peak_mem_bytes'] / 2**30:.2f} GiB{mfu}")
            return "; ".join(parts)
        if name == "throughput":
            res = json.loads((out / "throughput.json").read_text())["results"]
            return "; ".join(f"{r['precision']}: sampler {r['sampler_tok_s']:.0f} tok/s, generate "
                             f"{r['generate_tok_s']:.0f} tok/s, prefill {r['prefill_tok_s']:.0f} tok/s" for r in res)
    except (OSError, KeyError, ValueError, IndexError) as e:
        return f"(no figures: {e})"
    return ""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("out", nargs="?", default=os.environ.get("OUT") or "gpu-check-out")
    p.add_argument("--dry-run", action="store_true", help="tiny-random, tiny sizes, on the CPU")
    p.add_argument("--only", help="comma-separated step names to run (see the list above)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 dense peak (H100/H200 SXM: 989)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="skip the remaining steps once this much wall time is spent "
                        "(default 480 on a GPU, none in a dry run)")
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = float("inf") if args.dry_run else 480.0
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    info = env_info()
    args.gpus = 0 if args.dry_run else len(info["gpus"])
    if not args.dry_run and not args.gpus:
        print("No CUDA GPU is visible; run with --dry-run on a CPU machine.", file=sys.stderr)
        return 2
    (out / "env.json").write_text(json.dumps(info, indent=1))
    env = {**os.environ, "THOUGHTLAB_DATA_DIR": str(out / "data"), "PYTHONUNBUFFERED": "1"}
    t_all, results = time.perf_counter(), []
    for name, cmd, timeout in plan(args, out):
        spent = time.perf_counter() - t_all
        if spent > args.budget_s:
            results.append({"step": name, "status": "skipped (budget spent)", "wall_s": 0.0})
            continue
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        log = out / "logs" / f"{name}.log"
        try:
            with open(log, "w") as lf:
                lf.write("$ " + " ".join(cmd) + "\n")
                lf.flush()
                rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=lf, stderr=subprocess.STDOUT,
                                    timeout=timeout if not args.dry_run else 20 * timeout).returncode
            status = "ok" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = "failed (timeout)"
        wall = time.perf_counter() - t0
        results.append({"step": name, "status": status, "wall_s": round(wall, 1), "log": str(log),
                        "figures": headline(name, out) if status == "ok" else
                        log.read_text(errors="replace").strip().splitlines()[-1:]})
        print(f"[gpu_check] {name}: {status} in {wall:.0f} s", file=sys.stderr, flush=True)
    summary = {"dry_run": args.dry_run, "env": info, "wall_s": round(time.perf_counter() - t_all, 1),
               "steps": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    lines = [f"# GPU check{' (dry run)' if args.dry_run else ''}", "",
             f"torch {info['torch']}, CUDA {info['cuda']}, GPUs {info['gpus'] or 'none'}, "
             f"auto precision → {info['auto_resolves_to']}; total {summary['wall_s']} s", "",
             "| step | status | wall s | figures |", "|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['status']} | {r['wall_s']} | {r.get('figures', '')} |" for r in results]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["status"] == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
