#!/usr/bin/env python3
"""PyTorch eager peer for `swallow bench cpu`.

Trains the fixed bench config with transformers' LlamaForCausalLM and
torch.optim.AdamW on CPU in float32 (eager mode, no torch.compile; transformers'
default attention path):

  8 layers, hidden 512, 8 heads, 4 KV heads (head_dim 64), intermediate 1408,
  vocab 16384, seq 512, micro-batch 4, untied lm_head, rope theta 10000,
  AdamW(lr 3e-4, betas (0.9, 0.95), eps 1e-8, weight_decay 0.1), grad clip 1.0.

Input: seeded random tokens, one [B, T+1] batch; inputs = tokens[:, :T],
targets = tokens[:, 1:] (the swallow convention), mean cross entropy.

Runs --warmup untimed steps, then times --steps full steps (forward, backward,
clip, optimizer step, zero_grad), prints one line per step and, as the LAST
line, a JSON object:

  {"tokens_per_s": x, "gflops": y, "torch": version, "threads": n}

gflops uses the PaLM formula: FLOPs/token = 6*N + 12*layers*heads*head_dim*seq,
N = parameter count excluding the input embedding (lm_head counted).

By default glibc malloc is told (mallopt) to keep freed memory instead of
mmap/munmap-ing every large tensor each step (a common PyTorch-on-CPU tuning,
cf. jemalloc/tcmalloc preloading); --no-malloc-tuning turns that off.

Usage: python3 scripts/bench_pytorch.py [--threads N] [--steps 5] [--warmup 2]
                                        [--no-malloc-tuning]
Needs torch + transformers; not run by CI.
"""

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

LAYERS, HIDDEN, HEADS, KV_HEADS, INTER = 8, 512, 8, 4, 1408
VOCAB, SEQ, BATCH, THETA = 16384, 512, 4, 10000.0


def tune_glibc_malloc():
    """Keep freed tensor memory in the process instead of returning it to the OS.

    With glibc defaults every large activation/gradient buffer is mmap'd and
    munmap'd each step, so each step page-faults its whole working set again
    (~15% of the step time on the 2-core bench machines). Equivalent to
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2G MALLOC_TOP_PAD_=256M.
    Returns a short description, or "default" when not applicable.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "default"
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4
    ok = (mallopt(M_MMAP_MAX, 0) == 1
          and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
          and mallopt(M_TOP_PAD, 256 << 20) == 1)
    return "glibc-no-mmap" if ok else "default"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="keep glibc malloc defaults (mmap/munmap per large tensor)")
    args = ap.parse_args()

    malloc = "default" if args.no_malloc_tuning else tune_glibc_malloc()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTER,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=SEQ,
        rope_theta=THETA,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        use_cache=False,
    )
    model = LlamaForCausalLM(config).float().train()
    head_dim = HIDDEN // HEADS

    n_total = sum(p.numel() for p in model.parameters())
    n = n_total - model.model.embed_tokens.weight.numel()
    flops_per_token = 6 * n + 12 * LAYERS * HEADS * head_dim * SEQ

    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                            eps=1e-8, weight_decay=0.1)

    g = torch.Generator().manual_seed(args.seed + 1)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=g, dtype=torch.int64)
    inputs, targets = tokens[:, :SEQ].contiguous(), tokens[:, 1:].contiguous()
    tok_per_step = BATCH * SEQ

    print(f"torch {torch.__version__} transformers {transformers.__version__} "
          f"threads {torch.get_num_threads()} malloc {malloc} attn {model.config._attn_implementation} "
          f"params {n_total} (N excl. input embedding {n}) "
          f"flops/token {flops_per_token / 1e6:.1f}M", flush=True)

    def step():
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item(), gnorm.item()

    for i in range(args.warmup):
        t0 = time.perf_counter()
        loss, gnorm = step()
        dt = time.perf_counter() - t0
        print(f"warmup {i + 1}/{args.warmup}: loss {loss:.4f} gnorm {gnorm:.3f} "
              f"{dt:.3f}s {tok_per_step / dt:.1f} tok/s", flush=True)

    total = 0.0
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss, gnorm = step()
        dt = time.perf_counter() - t0
        total += dt
        print(f"step {i + 1}/{args.steps}: loss {loss:.4f} gnorm {gnorm:.3f} "
              f"{dt:.3f}s {tok_per_step / dt:.1f} tok/s", flush=True)

    tps = tok_per_step * args.steps / total
    print(json.dumps({
        "tokens_per_s": round(tps, 2),
        "gflops": round(tps * flops_per_token / 1e9, 2),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
