#!/usr/bin/env bash
# The full 8-rank layout matrix of the 3D-parallelism issue: every (tp, pp, dp) in
# (1,1,8) (2,1,4) (1,2,4) (2,2,2) (4,1,2) (2,4,1) (8,1,1), ZeRO-1 off and on, 1F1B, and interleaved
# and ZB-H1 (where pp > 1), sequence parallelism off and on (where tp > 1), each compared step by step with
# the single-rank run of the same GQA model (losses within 1e-5 relative). CI runs a covering
# subset (tests/parallel.rs); this runs all of it: `make parallel-matrix`.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RAYON_NUM_THREADS=1
data=out/sample/sample_text_document
out=out/parallel-matrix
mkdir -p "$out"
model=(--config tiny --data "$data" --steps 5 --micro-batch 2 --set model.num_heads=8 --set model.num_kv_heads=4
       --set model.num_layers=8 --set train.warmup_steps=0 --set train.lr=0.01)
run() { # name, ranks, flags...
  local name=$1 np=$2; shift 2
  mpirun --oversubscribe -np "$np" target/release/swallow train "${model[@]}" --metrics "$out/$name.jsonl" "$@" \
    > "$out/$name.log" 2>&1 < /dev/null
}
rm -f "$out"/*.jsonl
run reference 1
fail=0
total=0
for layout in "1 1 8" "2 1 4" "1 2 4" "2 2 2" "4 1 2" "2 4 1" "8 1 1"; do
  read -r tp pp dp <<< "$layout"
  for zero in 0 1; do
    for schedule in 1f1b interleaved zb-h1; do
      [ "$schedule" != 1f1b ] && [ "$pp" = 1 ] && continue
      vpp=1
      [ "$schedule" = interleaved ] && vpp=2
      for sp in "" "--sequence-parallel"; do
        [ -n "$sp" ] && [ "$tp" = 1 ] && continue
        name="tp$tp-pp$pp-dp$dp-zero$zero-vpp$vpp${sp:+-sp}"
        [ "$schedule" = zb-h1 ] && name="$name-zb-h1"
        total=$((total + 1))
        if ! run "$name" 8 --tp "$tp" --pp "$pp" --vpp "$vpp" --zero "$zero" $sp --set parallel.schedule="$schedule"; then
          echo "FAIL $name (see $out/$name.log)"; fail=$((fail + 1)); continue
        fi
        if python3 - "$out/reference.jsonl" "$out/$name.jsonl" <<'PY'
import json, sys
ref, got = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
worst = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
ok = len(got) == len(ref) and worst < 1e-5
print(f"{'ok  ' if ok else 'FAIL'} {sys.argv[2].split('/')[-1][:-6]:<36} worst relative loss difference {worst:.1e}")
sys.exit(0 if ok else 1)
PY
        then :; else fail=$((fail + 1)); fi
      done
    done
  done
done
echo "$((total - fail)) passed, $fail failed"
[ "$fail" = 0 ]
