#!/usr/bin/env bash
# Throughput and communication of the tiny model under 1/2/4/8-rank layouts on this machine
# (all ranks share its cores: these figures show overheads, not scaling). Prints a table.
# Usage: scripts/bench_parallel.sh [steps]   (needs `make build` and the sample shards of `make demo`)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RAYON_NUM_THREADS=1
steps=${1:-6}
data=out/sample/sample_text_document
out=out/bench-parallel
mkdir -p "$out"
printf "%-5s %-56s %10s %10s %10s %10s %10s\n" ranks layout "tok/s" "comm %" "tp MB" "dp MB" "pp MB"
while read -r np flags; do
  m="$out/m-$np-${flags// /_}.jsonl"
  rm -f "$m"
  # shellcheck disable=SC2086
  mpirun --oversubscribe -np "$np" target/release/swallow train --config tiny --data "$data" --steps "$steps" \
    --micro-batch 2 --set train.log_every=1000 --metrics "$m" $flags > /dev/null < /dev/null
  python3 - "$m" "$np" "$flags" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][1:]  # skip the first (warm-up) step
mean = lambda k: sum(r[k] for r in rows) / len(rows)
comm = 100 * mean("comm_s") / mean("step_time_s")
print(f"{sys.argv[2]:<5} {sys.argv[3] or '(single rank)':<56} {mean('tokens_per_s'):>10.0f} {comm:>10.1f} "
      f"{mean('tp_bytes')/1e6:>10.2f} {mean('dp_bytes')/1e6:>10.2f} {mean('pp_bytes')/1e6:>10.2f}")
PY
done <<'LAYOUTS'
1
2 --zero 1
2 --tp 2
2 --pp 2
4 --tp 2 --zero 1
4 --tp 2 --pp 2
8 --tp 2 --pp 2 --zero 1
8 --tp 2 --pp 2 --vpp 2 --sequence-parallel
4 --zero 0 --global-batch 32
4 --zero 1 --global-batch 32
4 --zero 2 --global-batch 32
4 --pp 4 --global-batch 32
4 --pp 4 --global-batch 32 --set parallel.schedule=zb-h1
LAYOUTS
