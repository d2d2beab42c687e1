#!/usr/bin/env bash
# Checkpoint write/read throughput for about 1.3 GB of state (a 111M-parameter Llama: fp32 weights
# and two AdamW moments) against the disk's sequential speed, measured by dd on the same disk,
# with the same bytes, interleaved with the checkpoint runs (a shared VM disk's speed drifts, so
# each repetition measures both back to back), REPS times; prints every repetition and the medians.
#   write: checkpoint save (create, write, fsync; the "written and flushed" figure) vs
#          dd conv=fsync (buffered writes + one fsync at the end: what the checkpoint does)
#   read:  checkpoint load (the collective read) vs dd, both cold: the file's pages are dropped
#          from the page cache first (dd iflag=nocache count=0 = posix_fadvise DONTNEED)
# Whichever of the two files is written first in a repetition is read first, alternating.
# Usage: scripts/bench_checkpoint.sh [NP] [layout flags...], e.g. scripts/bench_checkpoint.sh 2 --tp 2
# Env: REPS (default 5), BENCH_DIR (default out/bench-checkpoint), SWALLOW_BIN (default
# target/release/swallow: another build for an A/B).
set -euo pipefail
cd "$(dirname "$0")/.."
NP=${1:-1}; shift || true
REPS=${REPS:-5}
B=${SWALLOW_BIN:-target/release/swallow}
W=${BENCH_DIR:-out/bench-checkpoint}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$W" && mkdir -p "$W"
$B prep --tokenizer data/sample/tokenizer.json --input data/sample/ja.jsonl data/sample/en.jsonl \
    --output "$W/sample" --append-eod >/dev/null
model=(--set model.hidden_size=1024 --set model.num_heads=8 --set model.num_kv_heads=8
       --set model.ffn_hidden_size=2816 --set model.num_layers=8)
train=(train --config tiny --data "$W/sample" --seq-len 64 --micro-batch 1 --global-batch "$NP" "${model[@]}" "$@")

mbps() { awk '{ for (i = 1; i <= NF; i++) if ($i == "copied,") { print $1 / $(i + 1) / 1e6; exit } }'; }
drop_cache() { dd if="$1" iflag=nocache count=0 status=none; }
results="$W/results.tsv"
echo -e "rep\tdd_write\tckpt_write\tdd_read_cold\tckpt_read_cold" > "$results"
ckpt_save() {
    rm -rf "$W/ckpt"
    save=$(mpirun --oversubscribe -np "$NP" $B "${train[@]}" --steps 1 --save "$W/ckpt" | grep "^checkpoint")
    ckpt_w=$(sed -E 's/.*\(([0-9.]+) MB\/s\).*/\1/' <<< "$save")
    bytes=$(stat -c %s "$W/ckpt/step-1.h5")
}
ckpt_load() {
    drop_cache "$W/ckpt/step-1.h5"
    load=$(mpirun --oversubscribe -np "$NP" $B "${train[@]}" --steps 1 --load "$W/ckpt" | grep "^checkpoint")
    ckpt_r=$(sed -E 's/.*read in [0-9.]+ s \(([0-9.]+) MB\/s\).*/\1/' <<< "$load")
}
dd_write() { dd_w=$(dd if=/dev/zero of="$W/dd.bin" bs=1M count=$((bytes / 1048576)) conv=fsync 2>&1 | tail -1 | mbps); }
dd_read() { drop_cache "$W/dd.bin"; dd_r=$(dd if="$W/dd.bin" of=/dev/null bs=16M 2>&1 | tail -1 | mbps); }
ckpt_save  # sizes dd's file
for rep in $(seq "$REPS"); do
    # Whichever is written first is read first; the order alternates (a VM disk may cache recent writes).
    if (( rep % 2 )); then ckpt_save; dd_write; ckpt_load; dd_read; else dd_write; ckpt_save; dd_read; ckpt_load; fi
    rm -f "$W/dd.bin"
    printf "%s\t%.0f\t%.0f\t%.0f\t%.0f\n" "$rep" "$dd_w" "$ckpt_w" "$dd_r" "$ckpt_r" >> "$results"
done
echo "checkpoint of $bytes bytes, np $NP ${*:-}, $REPS repetitions (MB/s):"
sed "s/\t/    /g" "$results"
awk -F'\t' 'NR > 1 { for (c = 2; c <= 5; c++) v[c, NR - 1] = $c; n = NR - 1 }
    function median(c,   i, j, t, a) { for (i = 1; i <= n; i++) a[i] = v[c, i]
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    END { printf "median: write %.0f MB/s vs dd %.0f MB/s (%.0f%%); cold read %.0f MB/s vs dd %.0f MB/s (%.0f%%)\n",
          median(3), median(2), 100 * median(3) / median(2), median(5), median(4), 100 * median(5) / median(4) }' "$results"
rm -rf "$W"
