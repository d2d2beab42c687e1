#!/usr/bin/env bash
# Checkpoint write/read throughput for about 1.3 GB of state (a 111M-parameter Llama: fp32 weights
# and two AdamW moments), next to dd's sequential write (with fdatasync) and read of as many bytes
# on the same disk, in the same run. Usage: scripts/bench_checkpoint.sh [NP] [layout flags...]
# e.g. scripts/bench_checkpoint.sh 4 --tp 2 --zero 1. Needs target/release/swallow (make build).
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${1:-1}; shift || true
B=target/release/swallow
W=${BENCH_DIR:-out/bench-checkpoint}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$W" && mkdir -p "$W"
$B prep --tokenizer data/sample/tokenizer.json --input data/sample/ja.jsonl data/sample/en.jsonl \
    --output "$W/sample" --append-eod >/dev/null
echo "disk (dd, 1.3 GB):"
dd if=/dev/zero of="$W/dd.bin" bs=16M count=80 conv=fdatasync 2>&1 | tail -1 | sed 's/^/  write: /'
dd if="$W/dd.bin" of=/dev/null bs=16M 2>&1 | tail -1 | sed 's/^/  read (page cache as for the checkpoint): /'
rm -f "$W/dd.bin"
model=(--set model.hidden_size=1024 --set model.num_heads=8 --set model.num_kv_heads=8
       --set model.ffn_hidden_size=2816 --set model.num_layers=8)
train=(train --config tiny --data "$W/sample" --seq-len 64 --micro-batch 1 --global-batch "$NP" "${model[@]}" "$@")
mpirun --oversubscribe -np "$NP" $B "${train[@]}" --steps 1 --save "$W/ckpt" | grep -E "parameters|^checkpoint"
mpirun --oversubscribe -np "$NP" $B "${train[@]}" --steps 2 --load "$W/ckpt" | grep -E "^checkpoint"
rm -rf "$W"
