"""The one training loop, shared by every objective (objective-agnostic, accelerate-based).

Data flow: corpus -> packed windows -> objective.step(batch) -> loss/metrics/records ->
accelerator.backward -> optimizer -> RunLogger (buffered rows into DuckDB) and checkpoints.
Runs on CPU, one GPU or several GPUs depending on how `accelerate launch` started it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch

from lab import distributed
from lab.checkpoint import (latest_checkpoint, load_checkpoint_state, load_model_weights,
                            save_checkpoint)
from lab.config import RunConfig
from lab.corpora import load_documents, pack
from lab.errors import LabError
from lab import precision, profiling, trackers
from lab.models import load_model
from lab.objectives import get_objective
from lab.progress import Progress, StepNotes, step_note
from lab.runlog import RunLogger
from lab.store import Store


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    checkpoint: Path | None


def batch_indices(n_windows: int, step: int, micro: int, batch_size: int, grad_accum: int,
                  seed: int) -> torch.Tensor:
    """Window indices for (step, micro-batch): epochs are seeded permutations, so the order is
    the same after a resume as in an uninterrupted run."""
    start = (step * grad_accum + micro) * batch_size
    out = []
    for i in range(start, start + batch_size):
        epoch, offset = divmod(i, n_windows)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        out.append(int(torch.randperm(n_windows, generator=g)[offset]))
    return torch.tensor(out)


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warmup, then constant (the Quiet-STaR and RLP recipes use a constant lr)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def make_accelerator(mixed_precision: str, cpu: bool = False, log_with: list[str] | None = None,
                     project_dir: str | None = None):
    """An Accelerator on the device `accelerate launch` chose (or the default one in-process),
    with `mixed_precision` resolved there (`auto`: bf16 where native, lab/precision.py).
    bf16 is autocast: weights, gradients and AdamW state stay fp32. `log_with`: accelerate
    trackers (lab/trackers.py) writing under `project_dir`."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    cpu = cpu or distributed.accelerator_kwargs()["cpu"]   # CPU ranks must join one gloo group
    state = PartialState(cpu=cpu)
    resolved = precision.resolve(mixed_precision, state.device.type)
    earlier = AcceleratorState._shared_state.get("_mixed_precision")
    if earlier not in (None, resolved) and state.num_processes == 1:
        # accelerate keeps one state per process; an earlier in-process run (tests, the
        # benchmark) may have used another precision, and one process trains one run at a time.
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=resolved, cpu=cpu,
                       log_with=log_with or None, project_dir=project_dir)


@dataclass
class StepResult:
    loss: float                      # mean over the micro-batches
    tokens: int
    flops: float
    metrics: dict[str, float]        # objective metrics, mean over the micro-batches
    grad_norm: torch.Tensor


def train_step(objective, micro_batches: Iterable[dict[str, torch.Tensor]], optimizer, acc,
               trainable: list[torch.nn.Parameter], *, grad_accum: int, grad_clip: float,
               step: int, lr: float) -> StepResult:
    """One optimizer step, the same for the loop and the cost benchmark: for each micro-batch
    objective.step under autocast and backward of loss / grad_accum; then clipping (or just
    the norm), AdamW, zero_grad and the objective's after-step hook. Phases are timed through
    lab.profiling (no-ops unless the benchmark records)."""
    totals: dict[str, float] = {}
    tokens, flops, loss_sum = 0, 0.0, 0.0
    for i, batch in enumerate(micro_batches):
        step_note(f"micro-batch {i + 1}/{grad_accum}: forward" if grad_accum > 1 else "forward")
        with profiling.phase("step"), acc.autocast():
            out = objective.step(batch, record=0)
        if not torch.isfinite(out.loss):
            raise LabError(f"The loss became {out.loss.item()} at step {step}. Lower the "
                           f"learning rate (now {lr}) or check the data.")
        step_note(f"micro-batch {i + 1}/{grad_accum}: backward" if grad_accum > 1 else "backward")
        with profiling.phase("backward"):
            acc.backward(out.loss / grad_accum)
        loss_sum += out.loss.item() / grad_accum
        tokens += out.tokens
        flops += out.flops
        for k, v in out.metrics.items():
            totals[k] = totals.get(k, 0.0) + v / grad_accum
    with profiling.phase("optimizer"):
        if grad_clip > 0:
            grad_norm = acc.clip_grad_norm_(trainable, grad_clip)
        else:
            grad_norm = torch.norm(torch.stack([p.grad.norm() for p in trainable if p.grad is not None]))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        objective.after_optimizer_step()
    return StepResult(loss=loss_sum, tokens=tokens, flops=flops, metrics=totals, grad_norm=grad_norm)


def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over fp32 master weights with the fused kernel (CPU and GPU): on SmolLM2-135M on
    one CPU thread a step took 0.12 s against 0.98 s for torch's default per-tensor loop
    (bench/profile_adamw.py, docs/benchmarks.md).
    Parameters the fused kernel does not take (e.g. on another device) fall back to foreach."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _micro_batch(windows: torch.Tensor, step: int, micro: int, cfg: RunConfig, acc) -> dict[str, torch.Tensor]:
    idx = batch_indices(len(windows), step * acc.num_processes + acc.process_index, micro,
                        cfg.batch_size, cfg.grad_accum, cfg.seed)
    ids = windows[idx].to(acc.device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def train(cfg: RunConfig, run_id: str, store: Store, *,
          should_stop: Callable[[], bool] = lambda: False) -> TrainResult:
    """Train `cfg` as run `run_id`, resuming from its latest complete checkpoint if any."""
    from accelerate.utils import set_seed

    data_dir = store.data_dir
    acc = make_accelerator(cfg.mixed_precision, log_with=cfg.report_to,
                           project_dir=str(trackers.folder(data_dir, run_id)))
    trackers.start(acc, run_id, cfg.to_dict())
    main = acc.is_main_process
    set_seed(cfg.seed)

    phase = _phase_reporter(store, run_id) if main else (lambda frac, text: None)
    phase(0.0, f"loading model {cfg.model}")
    lm = load_model(cfg.model, data_dir, trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    model, tok = lm.model, lm.tokenizer
    phase(0.0, f"reading corpus {cfg.corpus}")
    docs = load_documents(cfg.corpus, n_docs=cfg.corpus_docs, text_field=cfg.text_field, seed=cfg.seed)
    windows = pack(docs, tok, cfg.seq_len, Progress("packing corpus", total=len(docs), callback=phase))
    obj_cls = get_objective(cfg.objective)
    objective = obj_cls(model, tok, obj_cls.Params(**cfg.params), cfg, acc.device)
    extras = objective.extra_modules()

    trainable = [p for p in model.parameters() if p.requires_grad]
    trainable += [p for m in extras.values() for p in m.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, cfg.lr, cfg.weight_decay)

    start_step, flops_done, wall_done, state = 0, 0.0, 0.0, {}
    ckpt = latest_checkpoint(data_dir, run_id)
    if ckpt is not None:  # resume: weights, extras, optimizer, objective state, counters
        load_model_weights(ckpt, model)
        state, obj_tensors = load_checkpoint_state(ckpt, extras, optimizer)
        objective.load_state_tensors(obj_tensors)
        start_step, flops_done, wall_done = state["step"], state["flops"], state["wall_time"]
    if main:
        # Rows logged after the checkpoint we resume from (all of them when there is none: a
        # job killed before its first checkpoint starts again from step 0) would be duplicated.
        store.truncate_after(run_id, start_step)

    # Checkpoints kept for matched-steps comparisons; remembered in the checkpoints, so a
    # resume keeps them even if a run they match was deleted meanwhile.
    keep = ({store.finished_step(r) for r in cfg.checkpoint_steps_of} - {None}) | set(state.get("keep_steps", []))

    names = list(extras)
    prepared = acc.prepare(model, optimizer, *extras.values())
    model, optimizer, prepared_extras = prepared[0], prepared[1], prepared[2:]
    objective.bind(model, dict(zip(names, prepared_extras)))
    if main:
        store.update_run(run_id, device=distributed.device_text(acc), max_steps=cfg.max_steps, phase="training")

    # Samples are recorded on a FIXED probe batch, so views can compare the same text
    # across training steps (heatmaps, forking-token overlap between checkpoints).
    probe = windows[:cfg.n_samples].to(acc.device) if cfg.n_samples else None
    logger = RunLogger(store, run_id, enabled=main, print_every=cfg.log_every, max_steps=cfg.max_steps)
    logger.step = start_step
    t_start = time.monotonic() - wall_done
    loss_value, last_step_flops = float("nan"), 0.0
    last_ckpt = ckpt
    # A long step (Quiet-STaR's thought passes, RL rollouts) says where it stands in the phase.
    notes = StepNotes(_phase_writer(store, run_id) if main else (lambda text: None), cfg.max_steps)
    with notes:
        try:
            for step in range(start_step, cfg.max_steps):
                if should_stop():
                    break
                # Compute budget: end when it is spent, or when the next step would overshoot it by
                # more than half a step (a costly objective's step can be a large share of a small budget).
                if cfg.max_flops and (flops_done >= cfg.max_flops or
                                      (last_step_flops and flops_done + last_step_flops / 2 > cfg.max_flops)):
                    last_ckpt = _checkpoint(data_dir, run_id, step, acc, model, tok, objective, extras,
                                            optimizer, flops_done, time.monotonic() - t_start, logger, keep)
                    if main:
                        store.update_run(run_id, max_steps=step)
                    break
                t0 = time.monotonic()
                lr = lr_at(step, cfg) * objective.lr_multiplier()
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # Thought sampling is reproducible on resume, and each rank draws its own numbers.
                torch.manual_seed(distributed.rank_seed(cfg.seed * 7919 + step, acc))
                is_sample_step = (step + 1) % cfg.sample_every == 0 or step == 0 or step + 1 == cfg.max_steps
                micro_batches = (_micro_batch(windows, step, micro, cfg, acc) for micro in range(cfg.grad_accum))
                notes.start_step(step + 1)
                res = train_step(objective, micro_batches, optimizer, acc, trainable,
                                 grad_accum=cfg.grad_accum, grad_clip=cfg.grad_clip, step=step + 1, lr=cfg.lr)
                if notes.wrote and main:
                    store.update_run(run_id, phase="training")
                dt = time.monotonic() - t0
                if is_sample_step and probe is not None:   # every rank: the wrapped model's forward syncs
                    _record_probe(objective, probe, cfg, step + 1, logger, acc)
                loss_value, tokens, step_flops, metrics = distributed.reduce_step(
                    acc, res.loss, res.tokens, res.flops, res.metrics)
                flops_done += step_flops
                last_step_flops = step_flops
                gn = float(res.grad_norm)
                step_metrics = {"loss": loss_value, "lr": lr, "grad_norm": gn if math.isfinite(gn) else None,
                                "tokens_per_s": tokens / max(dt, 1e-9), "step_time_s": dt, **metrics}
                logger.metrics(step + 1, step_metrics, wall_time=time.monotonic() - t_start, flops=flops_done)
                trackers.log(acc, step + 1, {**step_metrics, "flops": flops_done})
                logger.maybe_flush()
                done = step + 1
                if done < cfg.max_steps and (done in keep or (
                        cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
                    last_ckpt = _checkpoint(data_dir, run_id, done, acc, model, tok, objective, extras,
                                            optimizer, flops_done, time.monotonic() - t_start, logger, keep)
            else:
                last_ckpt = _checkpoint(data_dir, run_id, cfg.max_steps, acc, model, tok, objective, extras,
                                        optimizer, flops_done, time.monotonic() - t_start, logger, keep)
        except BaseException:
            logger.flush_quietly()   # a cancel or a crash keeps every step it logged
            raise
    logger.flush()
    trackers.end(acc)
    distributed.assert_same_on_all_ranks(acc, objective.state_tensors(), f"{cfg.objective}'s objective state")
    acc.wait_for_everyone()
    return TrainResult(steps=logger.step, final_loss=loss_value, checkpoint=last_ckpt)


def _phase_writer(store: Store, run_id: str) -> Callable[[str], None]:
    """Show what a job is doing on the Runs page (its phase) and in its log."""
    def write(text: str) -> None:
        print(f"[train] {text}", flush=True)
        store.update_run(run_id, phase=text[:200])
    return write


def _phase_reporter(store: Store, run_id: str) -> Callable[[float, str], None]:
    """What a job is doing before its first step (loading, packing with ETA), written at most
    every 2 s."""
    last = [0.0]
    write = _phase_writer(store, run_id)

    def report(frac: float, text: str) -> None:
        if time.monotonic() - last[0] >= 2.0 or frac in (0.0, 1.0):
            last[0] = time.monotonic()
            write(text)
    return report


def _record_probe(objective, probe: torch.Tensor, cfg: RunConfig, step: int, logger: RunLogger,
                  acc) -> None:
    """Run the objective without gradient on the probe batch and log its records."""
    with torch.no_grad(), acc.autocast():
        out = objective.step({"input_ids": probe, "attention_mask": torch.ones_like(probe)},
                             record=probe.shape[0])
    logger.records("tokens", step, out.token_records)
    logger.records("thoughts", step, out.thought_records)


def _checkpoint(data_dir, run_id, step, acc, model, tok, objective, extras, optimizer,
                flops, wall, logger: RunLogger, keep: set[int]) -> Path | None:
    """Called on every rank (under FSDP, gathering the full weights takes them all); rank 0
    writes the folder, the others return None."""
    weights = distributed.fsdp_full_weights(acc, model)
    if not acc.is_main_process:
        return None
    logger.flush()  # rows up to this step are safe before the checkpoint claims them
    unwrapped = {k: acc.unwrap_model(getattr(objective, k)) for k in extras}
    return save_checkpoint(data_dir, run_id, step, acc.unwrap_model(model), tok, unwrapped,
                           optimizer if weights is None else None,   # FSDP: sharded, not saved
                           {"step": step, "flops": flops, "wall_time": wall, "keep_steps": sorted(keep)},
                           objective.state_tensors(), keep=keep, weights=weights)
