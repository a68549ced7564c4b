#!/usr/bin/env bash
# Training benchmark: runs `tessera local` on Fashion-MNIST for the softmax and MLP examples with
# 2 servers and 1, then 2 workers, and prints one row per run: test accuracy, wall seconds
# (process start-up and data loading included) and training examples per second.
#
# Usage: tests/bench/training_bench.sh [BUILD_DIR]   (default: build)
# Targets (issue 5): softmax >= 84% in <= 10 s, mlp >= 88% in <= 40 s, both with 2 servers + 2 workers.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD="${1:-build}"
OUT="$(mktemp -d /tmp/tessera-training-bench-XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

field() {  # file key -> value of "key": value in a flat JSON report
  sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1" | head -n 1
}

printf '%-10s %-8s %-8s %-14s %-10s %-12s %s\n' job servers workers test_accuracy wall_s examples/s target
for job in softmax mlp; do
  case $job in
    softmax) target="acc>=0.84 wall<=10s" ;;
    mlp) target="acc>=0.88 wall<=40s" ;;
  esac
  for workers in 1 2; do
    report="$OUT/$job-$workers.json"
    if ! "$BUILD/tessera" local "examples/fashion-mnist-$job.json" --servers=2 --workers="$workers" \
        --report="$report" > "$OUT/$job-$workers.log" 2>&1; then
      echo "$job with $workers worker(s) failed; its output:" >&2
      tail -n 20 "$OUT/$job-$workers.log" >&2
      exit 1
    fi
    printf '%-10s %-8s %-8s %-14s %-10s %-12s %s\n' "$job" 2 "$workers" "$(field "$report" test_accuracy)" \
      "$(field "$report" wall_seconds)" "$(field "$report" examples_per_sec)" "$([ "$workers" = 2 ] && echo "$target")"
  done
done
