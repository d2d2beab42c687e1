#!/usr/bin/env python3
"""Loads an exported Hugging Face directory with transformers' LlamaForCausalLM and prints the mean
token loss of the first N windows of SEQ+1 tokens of a u16 token shard, read in order as
`swallow eval` reads them, and the special tokens as transformers sees them: the EOS id of
AutoTokenizer, of the model config and of the generation config (which `generate` stops at), and
whether AutoTokenizer puts the BOS first. Last line: {"loss": x, "eos": {...}, "bos_first": b}.

Usage: check_hf_export.py HF_DIR SHARD_PREFIX SEQ N [--tokenizer]   (needs torch and transformers)
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM


def main():
    hf_dir, prefix, seq, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    tokens = np.fromfile(prefix + ".bin", dtype=np.uint16).astype(np.int64)
    model = LlamaForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    total = 0.0
    with torch.no_grad():
        for j in range(n):
            x = torch.tensor(tokens[j * seq : j * seq + seq + 1])[None]
            logits = model(input_ids=x[:, :-1]).logits[0].double()
            total += torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum").item()
    out = {"loss": total / (n * seq)}
    if len(sys.argv) > 5 and sys.argv[5] == "--tokenizer":
        tok = AutoTokenizer.from_pretrained(hf_dir)
        out["eos"] = {
            "tokenizer": tok.eos_token_id,
            "config": model.config.eos_token_id,
            "generation": GenerationConfig.from_pretrained(hf_dir).eos_token_id,
        }
        out["bos_first"] = tok("hello").input_ids[0] == tok.bos_token_id
    print(json.dumps(out))


if __name__ == "__main__":
    main()
