"""Choose the mini model's size by measurement: train candidate Llama configs from scratch on
the built-in corpus for a fixed wall-clock budget each, then print training tokens/s,
held-out loss (nats/token on the test split's documents) and the teacher-forced answer NLL
of the test problems (lab/evaluation/teacher_forced.py).

    .venv/bin/python bench/mini_sizes.py --seconds 60 --corpus builtin:easy
    .venv/bin/python bench/mini_sizes.py --sizes 128x2,256x4 --precision bf16

Precision: `fp32`, or `bf16` (torch.autocast on CPU, measured here directly: lab/train.py
decides on its own whether to use it). The machine may be shared: the load average is printed.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'128x2,256x4' -> [(128, 2), (256, 4)] (hidden x layers)."""
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s]  # type: ignore[misc]


def build(hidden: int, layers: int, tok, seed: int):
    from transformers import AutoModelForCausalLM, LlamaConfig
    heads = max(1, hidden // 64)
    inter = int(hidden * 8 / 3) // 32 * 32 + 32 * (int(hidden * 8 / 3) % 32 > 0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg)


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    model.eval()
    losses = [model(input_ids=windows[i:i + batch], labels=windows[i:i + batch]).loss.item()
              for i in range(0, len(windows), batch)]
    model.train()
    return sum(losses) / len(losses)


def answer_nll(model, tok, level: str, n: int) -> float:
    from lab.evaluation.benchmarks import load_items
    from lab.evaluation.engine import Engine
    from lab.evaluation.teacher_forced import item_metrics
    model.eval()
    items = load_items("easy-test" if level == "easy" else "math-test", None, n)
    rows = item_metrics(Engine(model, tok, torch.device("cpu")), items, batch_size=32)
    model.train()
    vals = [r["answer_nll"] for r in rows if r["answer_nll"] is not None]
    return sum(vals) / len(vals)


def run_one(hidden: int, layers: int, args, tok, train: torch.Tensor, test: torch.Tensor) -> dict:
    model = build(hidden, layers, tok, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    tokens, steps, t0 = 0, 0, time.monotonic()
    use_bf16 = args.precision == "bf16"
    while time.monotonic() - t0 < args.seconds:
        idx = torch.randint(len(train), (args.batch,), generator=g)
        ids = train[idx]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += ids.numel()
        steps += 1
    dt = time.monotonic() - t0
    return {"size": f"{hidden}x{layers}", "params_M": n_params / 1e6, "steps": steps,
            "tok_s": tokens / dt, "train_loss": loss.item(), "heldout": heldout_loss(model, test),
            "answer_nll": answer_nll(model, tok, args.level, args.items)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128x2,192x3,256x4,384x4")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--corpus", default="builtin:easy", choices=["builtin", "builtin:easy"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--items", type=int, default=200, help="test problems for the answer NLL")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.level = "easy" if args.corpus == "builtin:easy" else "standard"
    torch.set_num_threads(args.threads)
    from lab import mathgen
    from lab.corpora import load_documents, pack
    from lab.mini import mini_tokenizer
    tok = mini_tokenizer()
    train = pack(load_documents(args.corpus, n_docs=20000, seed=1000), tok, args.seq_len)
    test = pack([p.text for p in mathgen.problems(300, "test", 0, args.level)], tok, args.seq_len)
    print(f"# corpus {args.corpus}, batch {args.batch}x{args.seq_len}, lr {args.lr}, {args.precision}, "
          f"{args.threads} threads, {args.seconds:.0f} s per size, load average "
          f"{os.getloadavg()[0]:.2f} (the machine may be shared)")
    print(f"{'size':>7} {'params':>8} {'steps':>6} {'tok/s':>8} {'train':>7} {'heldout':>8} {'ans_nll':>8}")
    for hidden, layers in parse_sizes(args.sizes):
        r = run_one(hidden, layers, args, tok, train, test)
        print(f"{r['size']:>7} {r['params_M']:>7.2f}M {r['steps']:>6} {r['tok_s']:>8.0f} "
              f"{r['train_loss']:>7.3f} {r['heldout']:>8.3f} {r['answer_nll']:>8.3f}", flush=True)
        assert math.isfinite(r["heldout"])


if __name__ == "__main__":
    main()
