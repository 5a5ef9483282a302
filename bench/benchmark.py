"""Cost benchmark of the training objectives: what one optimizer step of each costs next to NTP.

    python -m bench.benchmark [--models tiny-random,smollm2-135m] [--objectives ntp,quiet-star,rlp,rpt]
                              [--batch 2] [--seq-len 64] [--steps 3] [--warmup 1] [--threads N]
                              [--params-json FILE] [--json PATH] [--device auto|cpu|cuda]
                              [--peak-tflops 989] [--precision fp32,bf16]

What is measured (docs/benchmarks.md shows results and the exact commands)
--------------------------------------------------------------------------
- Every (model, precision, case) runs in its own fresh subprocess, on the SAME batch: the parent packs the
  built-in corpus as lab/train.py does (`pack(load_documents("builtin", ...))`), takes the
  windows of step 0 (`batch_indices`) and hands the very same tensor to every subprocess.
- One step = the training loop's own step, `lab.train.train_step` with grad_accum 1, through
  the same Accelerator (`make_accelerator`) and AdamW (`make_optimizer`): `objective.step(batch)`
  under autocast (bf16) or not (fp32), backward, grad-norm clipping, AdamW, `zero_grad`,
  `objective.after_optimizer_step()`. Timed with perf_counter (with cuda.synchronize on GPU),
  split into step() / backward / optimizer by train_step's lab.profiling phases.
- --precision fp32,bf16 runs every case in each precision (bf16 = autocast over fp32 weights and
  AdamW state, lab/precision.py) and adds a table of bf16 ÷ fp32 step times.
- NTP bracketing: in the subprocess of objective X, an NTP objective shares X's model and
  optimizer and runs right before and after every X step (N X N X … N). The time ratio of X
  step i is t(X_i) / mean(t(N_before), t(N_after)); the table gives the median over the measured
  steps. Machine load therefore hits both sides of each ratio alike. The `ntp` case runs NTP
  alone (its row: absolute NTP step time and memory).
- Warm-up steps (X and its bracketing NTP steps) are run first and not counted.
- FLOPs: StepOutput.flops (lab/flops.py conventions, rollouts included) of X divided by that of
  the NTP step on the same batch.
- Memory, CPU: resident set size. The RSS right after the model and batch are loaded is the
  baseline; before every X step the kernel's peak-RSS mark is reset (`5` > /proc/self/clear_refs)
  and `getrusage(RUSAGE_SELF).ru_maxrss` after the step gives that step's peak; the reported
  figure is the largest peak minus the baseline over X's steps (warm-up included, so the AdamW
  state is there). It therefore includes what the objective keeps besides activations (RLP's
  EMA teacher and frozen initial copy, RPT's frozen proxy, Quiet-STaR's head) plus gradients and
  AdamW state. Without clear_refs, the whole run's ru_maxrss is used (the method is recorded).
  GPU: torch.cuda.max_memory_allocated (reset before every X step) minus the allocation after load.
- GPU only: MFU = achieved FLOPs/s (StepOutput.flops / step time) / (--peak-tflops · 1e12),
  meaningful for NTP (the others count no-grad rollout FLOPs as well).
- Phase timers: library functions marked with lab.profiling (Quiet-STaR's thought_passes;
  lab.rl's sampling, scoring, policy forward and EMA update; RPT's proxy filter) report their
  time while the benchmark records, and count generated tokens exactly (sampled rollout tokens,
  Quiet-STaR thought tokens). No function is replaced.

Cases (the objective's own defaults unless listed; all are printed with the results)
- ntp, quiet-star (12 / 4 / 2, the official defaults), rlp (G 4, 32 thought tokens).
- rpt: the RL step (warmup_steps_format=0). On an untrained or small model every group usually
  gets equal (zero) rewards and GRPO drops it, so the "RL step" would only sample. To measure
  the step RPT takes once groups carry signal, this case sets RPT.train_equal_groups, which
  trains every group (the advantages stay those GRPO computed: 0 for an equal-reward group), so every
  rollout gets the gradient-bearing forward and backward: the upper bound of an RL step. How
  many groups GRPO would have dropped is reported (bench/natural_dropped_share).
- rpt-drop: the same RL step exactly as the objective runs it (groups dropped).
- rpt-format: the format warm-up step (the default first 20 optimizer steps: NTP on synthetic
  boxed completions).
--params-json FILE: {"case": {param: value}} overrides, e.g. {"rlp": {"group_size": 8}}.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# case -> objective, benchmark params (on top of the objective's defaults), options
RPT_RL = {"warmup_steps_format": 0}
CASES: dict[str, dict[str, Any]] = {
    "ntp": dict(objective="ntp", params={}, note="baseline"),
    "quiet-star": dict(objective="quiet-star", params={"n_ahead": 12, "n_ahead_talk": 4, "n_passes": 2},
                       note="official defaults 12/4/2"),
    "rlp": dict(objective="rlp", params={"group_size": 4, "max_thought_tokens": 32}, note="lab defaults"),
    "rpt": dict(objective="rpt", params=dict(RPT_RL), keep_all_groups=True,
                note="RL step, every group trained (benchmark keeps groups GRPO would drop)"),
    "rpt-drop": dict(objective="rpt", params=dict(RPT_RL), keep_all_groups=False,
                     note="RL step as the objective runs it (equal-reward groups dropped)"),
    "rpt-format": dict(objective="rpt", params={"warmup_steps_format": 20},
                       note="format warm-up step (first 20 optimizer steps)"),
}
DEFAULT_CASES = "ntp,quiet-star,rlp,rpt,rpt-drop,rpt-format"

# --precision names -> RunConfig.mixed_precision
PRECISION_NAMES = {"fp32": "no", "bf16": "bf16", "auto": "auto"}

# Parts of lab.train.train_step; every other phase is a library function marked with
# lab.profiling (nested inside "step" or "optimizer").
STEP_PARTS = ("step", "backward", "optimizer")
PHASE_WORDS = {
    "qs.thought_passes": "thought_passes: the thought passes after pass 0, forward (sampling included)",
    "rl.sample": "rl.sample_groups: KV-cached sampling of the G rollouts (no grad)",
    "rl.score_tails": "rl.score_tails: log p(x_t | thought) continuing the sampling cache",
    "rl.next_token_logprobs": "rl.next_token_logprobs: no-thought scoring (RLP: by θ, EMA φ and θ0)",
    "rl.policy_fwd": "rl.policy_logprobs: gradient-bearing forward over prompt + completion",
    "rl.ema_update": "rl.ema_update: EMA teacher update (in after_optimizer_step)",
    "rpt.proxy_filter": "RPT._select: proxy forward + top-k entropy filter",
}


# ---- measurement helpers (child side) ---------------------------------------------------------

def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else _maxrss_bytes()


def _maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024   # Linux reports KiB


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); ru_maxrss follows it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _floats(d: dict) -> dict[str, float | None]:
    out = {}
    for k, v in d.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = f if f == f and abs(f) != float("inf") else None
    return out


def run_child(spec: dict) -> dict:
    """One (model, case, precision): load, build, run N X N X … N, return the raw measurements."""
    import torch
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from lab import profiling
    from lab.config import RunConfig
    from lab.models import load_model
    from lab.objectives import get_objective
    from lab.objectives.ntp import NTP, NTPParams
    from lab.train import make_accelerator, make_optimizer, train_step

    t_start = time.perf_counter()
    load_avg = [os.getloadavg()]
    acc = make_accelerator(spec["precision"], cpu=spec["device"] == "cpu")
    device = acc.device
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    lm = load_model(spec["model"], seed=spec["seed"])
    model, tok = lm.model.to(device), lm.tokenizer
    ids = torch.load(spec["batch_file"]).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    load_s = time.perf_counter() - t_start
    gc.collect()
    rss_load = _rss_bytes()
    gpu_load = torch.cuda.memory_allocated(device) if cuda else 0
    can_reset = _reset_peak_rss()

    case = CASES[spec["case"]]
    B, L = ids.shape
    common = dict(model=spec["model"], seq_len=L, batch_size=B, seed=spec["seed"], lr=spec["lr"],
                  device="gpu" if cuda else "cpu", mixed_precision=spec["precision"])
    cfg = RunConfig(objective=case["objective"], params=dict(spec["params"]), **common).validate()
    cls = get_objective(cfg.objective)
    obj = cls(model, tok, cls.Params(**cfg.params), cfg, device)
    if case.get("keep_all_groups"):
        obj.train_equal_groups = True
    extras = obj.extra_modules()
    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable += [p for m in extras.values() for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg.lr, cfg.weight_decay)
    prepared = acc.prepare(model, optimizer, *extras.values())
    model, optimizer = prepared[0], prepared[1]
    obj.bind(model, dict(zip(extras, prepared[2:])))
    ntp = None
    if case["objective"] != "ntp":
        ntp = NTP(model, tok, NTPParams(), RunConfig(objective="ntp", **common).validate(), device)
        ntp.bind(model, {})

    clock = time.process_time if spec.get("clock") == "cpu" else time.perf_counter
    rec = profiling.Recorder(sync=sync, clock=clock)

    def one_step(o, seed_step: int) -> dict:
        """The training loop's own step (lab.train.train_step), its phases from lab.profiling."""
        torch.manual_seed(spec["seed"] * 7919 + seed_step)
        rec.reset()
        sync()
        t0 = clock()
        with profiling.recording(rec):
            res = train_step(o, [batch], optimizer, acc, trainable, grad_accum=1,
                             grad_clip=cfg.grad_clip, step=seed_step + 1, lr=cfg.lr)
        sync()
        total = clock() - t0
        phases = {k: v for k, v in rec.times.items() if k not in STEP_PARTS}
        return {"time": total, "step_fn": rec.times.get("step", 0.0),
                "backward": rec.times.get("backward", 0.0), "optimizer": rec.times.get("optimizer", 0.0),
                "flops": float(res.flops), "tokens": int(res.tokens), "loss": float(res.loss),
                "generated": int(rec.counts.get("generated_tokens", 0)), "phases": phases,
                "metrics": _floats(res.metrics)}

    def x_step(r: int) -> dict:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        elif can_reset:
            _reset_peak_rss()
        rec = one_step(obj, r)
        rec["peak_mem"] = ((torch.cuda.max_memory_allocated(device) - gpu_load) if cuda
                           else _maxrss_bytes() - rss_load)
        return rec

    total = spec["warmup"] + spec["steps"]
    x_steps, ntp_steps = [], []
    if ntp is not None:
        ntp_steps.append(one_step(ntp, 100_000))
    for r in range(total):
        x_steps.append(x_step(r))
        if ntp is not None:
            ntp_steps.append(one_step(ntp, 100_001 + r))
    load_avg.append(os.getloadavg())
    if cuda:
        mem_method = "torch.cuda.max_memory_allocated - allocated after load (reset per step)"
    elif can_reset:
        mem_method = "ru_maxrss after each step (peak mark reset before it) - RSS after load"
    else:
        mem_method = "ru_maxrss of the whole run - RSS after load (could not reset the peak mark)"
    from lab.models import describe
    return {"case": spec["case"], "objective": case["objective"], "model": spec["model"],
            "precision": acc.mixed_precision,
            "params": cfg.params, "batch_shape": [B, L], "device": str(device),
            "threads": torch.get_num_threads(), "load_s": load_s, "rss_after_load": rss_load,
            "gpu_alloc_after_load": gpu_load, "mem_method": mem_method, "warmup": spec["warmup"],
            "steps": spec["steps"], "x_steps": x_steps, "ntp_steps": ntp_steps,
            "loadavg": load_avg, "wall_s": time.perf_counter() - t_start, "desc": describe(model)}


# ---- aggregation ------------------------------------------------------------------------------

def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarise(raw: dict, peak_tflops: float | None) -> dict:
    """Per-case figures from the raw child output (measured steps only)."""
    w = raw["warmup"]
    xs = raw["x_steps"][w:]
    times = [s["time"] for s in xs]
    t = _median(times)
    out: dict[str, Any] = {
        "case": raw["case"], "objective": raw["objective"], "params": raw["params"],
        "step_time_s": t, "step_time_min_s": min(times), "step_time_max_s": max(times),
        "step_fn_s": _median([s["step_fn"] for s in xs]),
        "backward_s": _median([s["backward"] for s in xs]),
        "optimizer_s": _median([s["optimizer"] for s in xs]),
        "tokens": xs[0]["tokens"], "tokens_per_s": xs[0]["tokens"] / t,
        "generated_tokens": _median([s["generated"] for s in xs]),
        "generated_per_s": _median([s["generated"] / s["time"] for s in xs]) if any(s["generated"] for s in xs) else None,
        "flops": _median([s["flops"] for s in xs]),
        "peak_mem_bytes": max(s["peak_mem"] for s in raw["x_steps"]),
        "phases_s": {k: _median([s["phases"].get(k, 0.0) for s in xs])
                     for k in sorted({k for s in xs for k in s["phases"]})},
        "metrics": {k: _median([s["metrics"].get(k) for s in xs])
                    for k in sorted({k for s in xs for k in s["metrics"]})},
        "loadavg": raw["loadavg"], "wall_s": raw["wall_s"],
    }
    out["achieved_flops_per_s"] = out["flops"] / t
    if raw["case"] == "ntp":
        out["ntp_step_time_s"] = t
        out["time_ratio"] = 1.0
        out["time_ratios"] = [1.0] * len(xs)
        out["fwd_bwd_ratio"] = 1.0
        out["ntp_flops"] = out["flops"]
    else:
        ns = raw["ntp_steps"]
        ratios = [raw["x_steps"][r]["time"] / ((ns[r]["time"] + ns[r + 1]["time"]) / 2)
                  for r in range(w, len(raw["x_steps"]))]
        out["time_ratios"] = ratios
        out["time_ratio"] = _median(ratios)
        # the same without the optimizer part (AdamW + clipping: a fixed cost per step)
        fb = lambda s: s["step_fn"] + s["backward"]  # noqa: E731
        out["fwd_bwd_ratio"] = _median([fb(raw["x_steps"][r]) / ((fb(ns[r]) + fb(ns[r + 1])) / 2)
                                        for r in range(w, len(raw["x_steps"]))])
        out["ntp_step_time_s"] = _median([ns[r]["time"] for r in range(w, len(ns))])
        out["ntp_flops"] = _median([s["flops"] for s in ns])
    out["flops_ratio"] = out["flops"] / out["ntp_flops"] if out["ntp_flops"] else None
    if raw["objective"] == "rpt":
        groups = sum(s["metrics"].get("rpt/positions") or 0 for s in xs)
        dropped = sum(s["metrics"].get("rpt/dropped_groups") or 0 for s in xs)
        out["natural_dropped_share"] = dropped / groups if groups else None
    if peak_tflops and raw["device"].startswith("cuda"):
        out["mfu"] = out["achieved_flops_per_s"] / (peak_tflops * 1e12)
    if raw["objective"] == "quiet-star":
        p, L = raw["params"], raw["batch_shape"][1]
        K = p["n_ahead"] + p["n_ahead_talk"] - 2
        n_pos = L - p["n_ahead_talk"]
        out["qs_theory"] = {
            "sweeps": 1 + p["n_passes"] * K,
            "token_sweeps": 1 + p["n_passes"] * K * n_pos / L,
            "formula": "1 + n_passes·(n_ahead + n_ahead_talk − 2)",
            "token_note": "the thought passes cover n_pos = L − n_ahead_talk of the L positions",
        }
    return out


# ---- report -----------------------------------------------------------------------------------

def _fmt(x, spec=".2f", none="–"):
    return none if x is None else format(x, spec)


def _mib(b):
    return f"{b / 2**20:,.0f}"


def markdown(result: dict) -> str:
    lines = []
    env = result["environment"]
    lines.append(f"Clock: {result['args'].get('clock', 'wall')}. Device: {env['device']}; torch {env['torch']}, transformers {env['transformers']}; "
                 f"threads {env['threads']}; CPUs {env['cpu_count']}; "
                 f"load average at start {env['loadavg_start']}, at end {env['loadavg_end']}.")
    for model in result["models"]:
        lines.append("")
        size = f"{model['desc']['params'] / 1e6:.1f} M params, " if model.get("desc") else ""
        prec = model.get("precision", "auto")
        prec += f" → {model['resolved_precision']}" if model.get("resolved_precision") not in (None, prec) else ""
        lines.append(f"### {model['model']} ({prec}): batch {model['batch'][0]} × {model['batch'][1]} "
                     f"(windows {model['window_indices']}), {size}warm-up {result['args']['warmup']}, "
                     f"measured steps {result['args']['steps']}")
        lines.append("")
        gpu = any("mfu" in c for c in model["cases"])
        head = ["case", "step s (median; min–max)", "step() / backward / optim s", "train tok/s",
                "generated tok/s (tokens/step)", "bracketing NTP s", "time ÷ NTP (bracketed)",
                "fwd+bwd ÷ NTP", "FLOPs ÷ NTP",
                "GFLOP/s", "peak mem growth MiB"] + (["MFU"] if gpu else [])
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for c in model["cases"]:
            if "error" in c:
                lines.append(f"| {c['case']} | failed: {c['error']} |" + " |" * (len(head) - 2))
                continue
            gen = ("–" if c["generated_per_s"] is None
                   else f"{c['generated_per_s']:.1f} ({c['generated_tokens']:.0f})")
            row = [c["case"],
                   f"{c['step_time_s']:.3f} ({c['step_time_min_s']:.3f}–{c['step_time_max_s']:.3f})",
                   f"{c['step_fn_s']:.3f} / {c['backward_s']:.3f} / {c['optimizer_s']:.3f}",
                   f"{c['tokens_per_s']:.1f}", gen, f"{c['ntp_step_time_s']:.3f}",
                   f"{c['time_ratio']:.2f}" + ("" if c["case"] == "ntp" else
                                               f" ({min(c['time_ratios']):.2f}–{max(c['time_ratios']):.2f})"),
                   _fmt(c.get("fwd_bwd_ratio")), _fmt(c["flops_ratio"]),
                   f"{c['achieved_flops_per_s'] / 1e9:.1f}",
                   _mib(c["peak_mem_bytes"])]
            if gpu:
                row.append(_fmt(c.get("mfu"), ".1%"))
            lines.append("| " + " | ".join(row) + " |")
        for c in model["cases"]:
            if "qs_theory" in c:
                th = c["qs_theory"]
                lines.append("")
                lines.append(f"Quiet-STaR: theoretical forward sweeps {th['sweeps']} = {th['formula']}; "
                             f"token-weighted {th['token_sweeps']:.2f} ({th['token_note']}) | FLOPs ratio "
                             f"{c['flops_ratio']:.2f} | measured time ratio {c['time_ratio']:.2f} "
                             f"(forward + backward only: {c['fwd_bwd_ratio']:.2f})")
        lines.append("")
        lines.append("Phases (median seconds per step, share of the step):")
        lines.append("")
        for c in model["cases"]:
            if c.get("phases_s"):
                parts = [f"{k} {v:.3f} s ({v / c['step_time_s']:.0%})" for k, v in c["phases_s"].items()]
                lines.append(f"- {c['case']}: " + "; ".join(parts))
        used = sorted({k for c in model["cases"] for k in c.get("phases_s", {})})
        if used:
            lines.append("")
            lines.append("Phase legend: " + "; ".join(f"{k} = {PHASE_WORDS.get(k, k)}" for k in used) + ".")
        lines.append("")
        lines.append("Objective metrics (median over measured steps):")
        lines.append("")
        keys = ("thought/length", "thought/closed", "rpt/positions", "rpt/format_fail", "rpt/warmup",
                "reward/mean")
        for c in model["cases"]:
            if "metrics" not in c:
                continue
            ms = {k: c["metrics"][k] for k in keys if c["metrics"].get(k) is not None}
            if c.get("natural_dropped_share") is not None:
                ms["bench/natural_dropped_share"] = c["natural_dropped_share"]
            if ms:
                lines.append(f"- {c['case']}: " + ", ".join(f"{k} {v:.3g}" for k, v in ms.items()))
    lines += precision_table(result)
    lines.append("")
    lines.append("Parameters (objective params after defaults):")
    lines.append("")
    seen = {}
    for model in result["models"]:
        for c in model["cases"]:
            if "params" in c:
                seen.setdefault(c["case"], c["params"])
    for case, params in seen.items():
        extra = ", with --params-json overrides" if case in result["args"].get("overrides", {}) else ""
        lines.append(f"- {case} ({CASES[case]['note']}{extra}): `{json.dumps(params, sort_keys=True)}`")
    return "\n".join(lines)


def precision_table(result: dict) -> list[str]:
    """Per model and case: step time in each precision and the ratio to the first one."""
    by_model: dict[str, list[dict]] = {}
    for entry in result["models"]:
        by_model.setdefault(entry["model"], []).append(entry)
    lines: list[str] = []
    for model, entries in by_model.items():
        if len(entries) < 2:
            continue
        base, names = entries[0], [e.get("precision", "auto") for e in entries]
        lines += ["", f"Precision comparison, {model} (step time s; ratio to {names[0]}; time ÷ NTP in each):", ""]
        head = ["case"] + [f"{n} s" for n in names] + [f"{n} ÷ {names[0]}" for n in names[1:]] + \
               [f"÷ NTP {n}" for n in names]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c0 in base["cases"]:
            cs = [next((c for c in e["cases"] if c["case"] == c0["case"] and "error" not in c), None)
                  for e in entries]
            t = [c["step_time_s"] if c else None for c in cs]
            row = [c0["case"]] + [_fmt(x, ".3f") for x in t] + \
                  [_fmt(x / t[0] if x and t[0] else None) for x in t[1:]] + \
                  [_fmt(c["time_ratio"] if c else None) for c in cs]
            lines.append("| " + " | ".join(row) + " |")
    return lines


# ---- parent -----------------------------------------------------------------------------------

def _tokenizer(spec: str):
    from lab.models import PRESETS, load_model, scratch_config, smol_tokenizer
    if spec in PRESETS:   # SmolLM2's tokenizer, or a scratch preset's own
        return smol_tokenizer() if spec == "smollm2-135m" else scratch_config(spec)[1]
    return load_model(spec).tokenizer


def make_batch(model: str, batch: int, seq_len: int, seed: int, corpus_docs: int):
    """The step-0 batch of a training run with these settings (lab/train.py)."""
    from lab.corpora import load_documents, pack
    from lab.train import batch_indices
    tok = _tokenizer(model)
    windows = pack(load_documents("builtin", n_docs=corpus_docs, seed=seed), tok, seq_len)
    idx = batch_indices(len(windows), 0, 0, batch, 1, seed)
    return windows[idx], idx.tolist()


def _pick_device(choice: str) -> str:
    import torch
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return choice


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--models", default="tiny-random,smollm2-135m")
    p.add_argument("--objectives", default=DEFAULT_CASES,
                   help=f"cases, comma-separated, from: {', '.join(CASES)}")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="measured steps per case")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps per case first")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--params-json", help='JSON file {"case": {param: value}} of overrides')
    p.add_argument("--json", help="also write all results (raw steps included) to this file")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto",
                   help="comma-separated, each case runs in each: fp32, bf16 (autocast over fp32 "
                        "weights) or auto (lab/precision.py's choice); e.g. fp32,bf16")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="GPU peak bf16 dense TFLOP/s for MFU (H100 SXM: 989)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="wall: perf_counter; cpu: the process's CPU seconds (time.process_time), "
                        "steadier on a loaded machine with --threads 1")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpus-docs", type=int, default=400)
    p.add_argument("--child-timeout", type=int, default=3600, help="seconds per (model, case)")
    p.add_argument("--report", help="re-print the tables of a saved --json result (summaries "
                   "recomputed from its raw steps) and exit")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cases = [c.strip() for c in args.objectives.split(",") if c.strip()]
    bad = [c for c in cases if c not in CASES]
    if bad:
        p.error(f"unknown case(s) {bad}; choose from {', '.join(CASES)}")
    if args.steps < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--steps must be >= 1, --warmup >= 0, --batch >= 1")
    args.cases = (["ntp"] if "ntp" not in cases else []) + cases   # NTP's own row is always there
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    args.precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    if not args.precisions or any(x not in PRECISION_NAMES for x in args.precisions):
        p.error(f"--precision: choose from {', '.join(PRECISION_NAMES)} (got {args.precision!r})")
    args.overrides = json.loads(Path(args.params_json).read_text()) if args.params_json else {}
    unknown = [k for k in args.overrides if k not in CASES]
    if unknown:
        p.error(f"--params-json: unknown case(s) {unknown}")
    return args


def _run_model(args, model: str, prec: str, ids, idx: list[int], batch_file: Path, device: str,
               tmp: Path) -> dict[str, Any]:
    """Every case of one (model, precision), each in its own subprocess."""
    entry: dict[str, Any] = {"model": model, "precision": prec, "batch": list(ids.shape),
                             "window_indices": idx, "cases": [], "raw": {}}
    for case in args.cases:
        params = {**CASES[case]["params"], **args.overrides.get(case, {})}
        tag = f"{model}-{prec}-{case}"
        spec = {"model": model, "case": case, "params": params, "batch_file": str(batch_file),
                "device": device, "threads": args.threads, "seed": args.seed, "lr": args.lr,
                "precision": PRECISION_NAMES[prec], "clock": args.clock, "warmup": args.warmup, "steps": args.steps,
                "out_file": str(tmp / f"out-{tag}.json")}
        spec_file = tmp / f"spec-{tag}.json"
        spec_file.write_text(json.dumps(spec))
        log = tmp / f"log-{tag}.txt"
        print(f"[bench] {model} / {prec} / {case} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            with open(log, "w") as lf:
                rc = subprocess.run([sys.executable, "-m", "bench.benchmark", "--child", str(spec_file)],
                                    cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT,
                                    timeout=args.child_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            print(f"[bench] {tag} FAILED ({rc}):\n" + "\n".join(tail), file=sys.stderr)
            entry["cases"].append({"case": case, "error": f"exit {rc}: {tail[-1] if tail else ''}"})
            continue
        raw = json.loads(Path(spec["out_file"]).read_text())
        summary = summarise(raw, args.peak_tflops)
        entry["cases"].append(summary)
        entry["raw"][case] = raw
        entry.setdefault("desc", raw["desc"])
        entry["resolved_precision"] = raw["precision"]
        print(f"[bench] {tag}: {summary['step_time_s']:.3f} s/step, ×{summary['time_ratio']:.2f} NTP, "
              f"{time.perf_counter() - t0:.0f} s wall", file=sys.stderr, flush=True)
    return entry


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.report:
        result = json.loads(Path(args.report).read_text())
        for model in result["models"]:
            model["cases"] = [summarise(model["raw"][c["case"]], result["args"]["peak_tflops"])
                              if c["case"] in model["raw"] else c for c in model["cases"]]
        print(markdown(result))
        return 0
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        res = run_child(spec)
        Path(spec["out_file"]).write_text(json.dumps(res))
        return 0

    import torch
    import transformers
    device = _pick_device(args.device)
    env = {"device": (torch.cuda.get_device_name(0) if device == "cuda"
                      else f"cpu ({platform.processor() or platform.machine()})"),
           "torch": torch.__version__, "transformers": transformers.__version__,
           "threads": args.threads or torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "loadavg_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}
    result: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "child"},
                              "environment": env, "models": []}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="thoughtlab-bench-") as tmp:
        for model in args.model_list:
            ids, idx = make_batch(model, args.batch, args.seq_len, args.seed, args.corpus_docs)
            batch_file = Path(tmp) / f"batch-{len(result['models'])}.pt"
            torch.save(ids, batch_file)
            for prec in args.precisions:
                result["models"].append(_run_model(args, model, prec, ids, idx, batch_file, device, Path(tmp)))
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    env["wall_s"] = time.perf_counter() - t_all
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
