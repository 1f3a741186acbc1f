#!/bin/bash
# Two builds' in-memory kernels alternately (each build's quick_timing example in turn, three
# rounds), on the full-size workloads, f32 and bf16, one and two threads:
#   OLD=../old/target/release/examples/quick_timing \
#   NEW=target/release/examples/quick_timing scripts/ab-kernels.sh
# (build each with `cargo build --release --example quick_timing -p kldiv`).
set -euo pipefail
: "${OLD:?path to the old quick_timing binary}" "${NEW:=target/release/examples/quick_timing}"
for round in 1 2 3; do
  for cfg in "2 W1 f32" "2 W3 f32" "2 W4 f32" "1 W4 f32" "2 W2 f32" "2 W1 bf16" "2 W3 bf16" "2 W4 bf16"; do
    set -- $cfg
    for build in OLD NEW; do
      bin=${!build}
      if [ "$3" = bf16 ]; then
        r=$(RAYON_NUM_THREADS=$1 BF16=1 SCALE=1 W=$2 REPS=5 "$bin")
      else
        r=$(RAYON_NUM_THREADS=$1 SCALE=1 W=$2 ONLY_AUTO=1 REPS=5 "$bin")
      fi
      echo "round $round, $1 threads, $3, $build: $r"
    done
  done
done
