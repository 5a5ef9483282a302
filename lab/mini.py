"""The miniature model family: small Llama-style models trained from scratch, fast on CPU.

With SmolLM2's 49,152-token vocabulary the vocabulary projection dominates a small model's
cost, so the mini models use their own tokenizer: a byte-level BPE of MINI_VOCAB ids trained
offline and deterministically (`tokenizers`) on the built-in corpus, both levels. Digits are
split one by one (arithmetic sees every digit as its own token, like Llama's tokenizer),
and the tokens the objectives write (`<think>`, `</think>`, Quiet-STaR's thought start/end)
are single ids. The tokenizer is built once and cached; it is saved with every checkpoint,
so a checkpoint of a mini model is a plain Hugging Face folder.

A mini preset is initialised from scratch with the run's seed (lab.models.load_model). The
sizes were chosen by measurement: `python bench/mini_sizes.py` (docs/findings.md).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

MINI_VOCAB = 512
TOKENIZER_VERSION = "v1"          # bump when the training text or settings change
EOS = "<|endoftext|>"
THOUGHT_TOKENS = ["<think>", "</think>", "<|startofthought|>", "<|endofthought|>"]
TOKENIZER_DOCS = 2000             # documents per level the BPE is trained on (train split)

# name -> (hidden, layers, heads, intermediate)
MINI_SIZES: dict[str, tuple[int, int, int, int]] = {
    "mini": (256, 4, 4, 704),
    "mini-xs": (128, 2, 4, 352),
}
MINI_PRESETS = tuple(MINI_SIZES)


def tokenizer_training_text() -> list[str]:
    """The BPE's training text: train-split documents of both levels of the built-in corpus."""
    from lab import mathgen
    return [p.text for level in mathgen.LEVELS
            for p in mathgen.problems(TOKENIZER_DOCS, "train", 0, level=level)]


def train_tokenizer(vocab_size: int = MINI_VOCAB):
    """A fresh byte-level BPE (a transformers fast tokenizer); deterministic for fixed input."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS] + THOUGHT_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    bpe.train_from_iterator(tokenizer_training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=EOS, eos_token=EOS,
                                   pad_token=EOS, unk_token=None, model_max_length=2048,
                                   clean_up_tokenization_spaces=False)


def tokenizer_folder() -> Path:
    """The cached tokenizer folder, built on first use (about a second)."""
    from lab.models import cache_dir
    out = cache_dir() / "mini" / f"tokenizer-{MINI_VOCAB}-{TOKENIZER_VERSION}"
    if (out / "tokenizer.json").exists():
        return out
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    train_tokenizer().save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():                      # another process won the race; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def mini_tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tokenizer_folder())


def mini_config(preset: str, tokenizer):
    """The LlamaConfig of a mini preset (tied embeddings, RoPE, SwiGLU, no biases)."""
    from transformers import LlamaConfig

    from lab.errors import LabError
    if preset not in MINI_SIZES:
        raise LabError(f"unknown mini preset {preset!r}; use one of {', '.join(MINI_PRESETS)}")
    hidden, layers, heads, inter = MINI_SIZES[preset]
    eos = tokenizer.convert_tokens_to_ids(EOS)
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                       num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=heads, max_position_embeddings=2048,
                       tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos,
                       pad_token_id=eos)
