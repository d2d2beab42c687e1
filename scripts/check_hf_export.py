#!/usr/bin/env python3
"""Loads an exported Hugging Face directory with transformers' LlamaForCausalLM and prints the mean
token loss of the first N windows of SEQ+1 tokens of a u16 token shard, read in order as
`swallow eval` reads them. Last line: {"loss": x}.

Usage: check_hf_export.py HF_DIR SHARD_PREFIX SEQ N   (needs torch and transformers)
"""
import json
import sys

import numpy as np
import torch
from transformers import LlamaForCausalLM


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
    print(json.dumps({"loss": total / (n * seq)}))


if __name__ == "__main__":
    main()
