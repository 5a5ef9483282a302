"""Checkpoints: HF `save_pretrained` (safetensors) plus the objective's extra modules, the
optimizer state and the trainer state, all as safetensors/JSON (no pickles).

A checkpoint is written to `step-N.tmp` and renamed to `step-N` only when complete (a
`COMPLETE` marker is its last file), so a job killed mid-write leaves the previous
checkpoint as the latest one and resume never reads a half-written folder. A failed write
removes its `step-N.tmp`. `MANIFEST.json` holds the sha256 of every tensor file, checked
whenever a checkpoint is loaded.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from collections.abc import Collection
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lab.errors import LabError, storage_full

KEEP = 2  # complete checkpoints kept per run (the newest ones)
MANIFEST = "MANIFEST.json"   # sha256 of every tensor file, checked on load
MODEL_FILES = ("model",)     # file name prefixes: the model's weights, and the training state
STATE_FILES = ("extra_", "objective_state", "optimizer")


def run_dir(data_dir: str | Path, run_id: str) -> Path:
    return Path(data_dir) / "runs" / run_id


def checkpoint_dir_for(data_dir: str | Path, run_id: str, step: int) -> Path:
    return run_dir(data_dir, run_id) / "checkpoints" / f"step-{int(step):06d}"


def list_checkpoints(data_dir: str | Path, run_id: str) -> list[tuple[int, Path]]:
    root = run_dir(data_dir, run_id) / "checkpoints"
    out = []
    if root.exists():
        for p in root.iterdir():
            if p.name.startswith("step-") and not p.name.endswith(".tmp") and (p / "COMPLETE").exists():
                try:
                    out.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(out)


def latest_checkpoint(data_dir: str | Path, run_id: str) -> Path | None:
    found = list_checkpoints(data_dir, run_id)
    return found[-1][1] if found else None


def save_checkpoint(data_dir: str | Path, run_id: str, step: int, model, tokenizer,
                    extras: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer | None,
                    state: dict[str, Any], objective_tensors: dict[str, torch.Tensor],
                    keep: Collection[int] = (), weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write atomically (step-N.tmp, then renamed to step-N with a COMPLETE marker), then prune
    to the newest KEEP checkpoints plus the steps in `keep`."""
    final = checkpoint_dir_for(data_dir, run_id, step)
    tmp = final.with_name(final.name + ".tmp")
    for stale in final.parent.glob("step-*.tmp"):   # left by a job killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_files(tmp, step, model, tokenizer, extras, optimizer, state, objective_tensors, weights)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)   # a failed write must not fill the disk for the next one
        full = storage_full(data_dir, e, f"write checkpoint {final.name} of run {run_id}") \
            if isinstance(e, Exception) else None
        if full is not None:
            raise full from e
        raise
    for old_step, old in list_checkpoints(data_dir, run_id)[:-KEEP]:
        if old_step not in keep:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _write_files(tmp: Path, step: int, model, tokenizer, extras: dict[str, torch.nn.Module],
                 optimizer: torch.optim.Optimizer | None, state: dict[str, Any],
                 objective_tensors: dict[str, torch.Tensor], weights: dict | None = None) -> None:
    # `weights`: the full state dict gathered from FSDP shards (lab/distributed.py), else the model's own.
    model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
    tokenizer.save_pretrained(tmp)
    for name, module in extras.items():
        save_file(_contiguous(module.state_dict()), str(tmp / f"extra_{name}.safetensors"))
    if objective_tensors:
        save_file(_contiguous(objective_tensors), str(tmp / "objective_state.safetensors"))
    if optimizer is not None:
        tensors, groups = _flatten_optimizer(optimizer.state_dict())
        if tensors:
            save_file(tensors, str(tmp / "optimizer.safetensors"))
        state = {**state, "optimizer_param_groups": groups}
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    sums = {p.name: _sha256(p) for p in sorted(tmp.glob("*.safetensors"))}
    (tmp / MANIFEST).write_text(json.dumps({"sha256": sums}, indent=1))
    (tmp / "COMPLETE").write_text(str(step))
    _fsync_dir(tmp)


def verify_checkpoint(folder: str | Path, prefixes: tuple[str, ...] = ("",)) -> bool:
    """Check the tensor files of `folder` whose names start with one of `prefixes` (all by
    default) against the checksums written with the checkpoint: safetensors has none, so
    damaged tensor bytes would load without complaint. Raises LabError naming the checkpoint on
    a mismatch. Returns False for a checkpoint written before checksums were recorded: it
    loads unchecked, and the job log says so."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        print(f"[checkpoint] {folder} has no {MANIFEST} (written by an older version): its "
              "tensors are loaded without a checksum test.", file=sys.stderr, flush=True)
        return False
    try:
        sums = json.loads(manifest.read_text())["sha256"]
        expected = {name: digest for name, digest in sums.items() if name.startswith(prefixes)}
        present = {p.name for p in folder.glob("*.safetensors") if p.name.startswith(prefixes)}
        bad = sorted(present - set(expected)) + sorted(n for n in expected if n not in present or
                                                       _sha256(folder / n) != expected[n])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LabError(f"Checkpoint {folder} could not be checked against its {MANIFEST} ({e}). "
                       "Delete the checkpoint to resume from an earlier one.") from e
    if bad:
        raise LabError(f"Checkpoint {folder} is corrupted: {', '.join(bad)} does not match the checksum "
                       "written with it (damaged or replaced on disk). Delete the checkpoint to resume "
                       "from an earlier one.")
    return True


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_checkpoint_state(folder: Path, extras: dict[str, torch.nn.Module],
                          optimizer: torch.optim.Optimizer | None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore extra modules and the optimizer in place; return (trainer state, objective tensors).
    Model weights are loaded by the caller through `from_pretrained`/`load_safetensors_into`."""
    verify_checkpoint(folder, STATE_FILES)
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
        for name, module in extras.items():
            module.load_state_dict(load_file(str(folder / f"extra_{name}.safetensors")))
        obj_path = folder / "objective_state.safetensors"
        objective_tensors = load_file(str(obj_path)) if obj_path.exists() else {}
        if optimizer is not None and (folder / "optimizer.safetensors").exists():
            sd = _unflatten_optimizer(load_file(str(folder / "optimizer.safetensors")),
                                      state["optimizer_param_groups"])
            optimizer.load_state_dict(sd)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as e:
        raise LabError(f"Checkpoint {folder} is damaged or incompatible ({str(e).splitlines()[0][:200]}). "
                       "Delete it to resume from an earlier one.") from e
    return state, objective_tensors


def load_model_weights(folder: Path, model) -> None:
    """Load a checkpoint's safetensors weights into an existing model (tied weights kept)."""
    from safetensors import SafetensorError
    files = sorted(folder.glob("model*.safetensors"))
    if not files:
        raise LabError(f"Checkpoint {folder} has no model safetensors.")
    verify_checkpoint(folder, MODEL_FILES)
    try:
        sd = {}
        for f in files:
            sd.update(load_file(str(f)))
    except (SafetensorError, OSError) as e:
        raise LabError(f"Checkpoint {folder} is corrupted ({e}). Delete it to resume from an earlier one.") from e
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "lm_head" not in m]  # tied to the embedding
    if missing or unexpected:
        raise LabError(f"Checkpoint {folder} does not match the model (missing {missing[:3]}, "
                       f"unexpected {unexpected[:3]}).")


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def _flatten_optimizer(sd: dict) -> tuple[dict[str, torch.Tensor], list]:
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            t = v if torch.is_tensor(v) else torch.tensor(v)
            tensors[f"{idx}.{k}"] = t.detach().contiguous().cpu()
    return tensors, sd["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        idx, _, name = key.partition(".")
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": groups}


def _fsync_dir(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
