#!/usr/bin/env bash
# `kldiv compare` on logit files already in the page cache against the in-memory kernel
# (`kldiv bench --shapes W4`, rows of 128,256 logits), alternately in one run: the ratio of
# their rates is what the page cache, the mapping and process start cost. DIR holds p.npy and
# q.npy (f32 logits; report-speed.sh makes W4-shaped ones), ROWS × COLS their shape (rows of
# about W4's length, so that the in-memory rate is the same kernel's).
#   DIR=/tmp/w4 ROUNDS=3 scripts/file-vs-memory.sh
#   DIR=/tmp/big ROWS=8192 COLS=131072 RUNS=3 scripts/file-vs-memory.sh   # 2 × 4 GiB
set -euo pipefail
K=${K:-target/release/kldiv}
DIR=${DIR:?directory holding p.npy and q.npy}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-7}
ELEMS=$((${ROWS:-1024} * ${COLS:-128256}))
cat "$DIR/p.npy" "$DIR/q.npy" >/dev/null # into the page cache
echo "round	in-memory Gelem/s	file Gelem/s (median of $RUNS)	file ÷ in-memory"
for r in $(seq "$ROUNDS"); do
  mem=$("$K" bench --device cpu --shapes W4 --repeat 7 | awk '/cpu-simd/ {print $8}')
  ts=()
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    "$K" compare "$DIR/p.npy" "$DIR/q.npy" --input logits --device cpu >/dev/null
    t1=$(date +%s%N)
    ts+=("$((t1 - t0))")
  done
  ns=$(printf '%s\n' "${ts[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
  file=$(echo "$ELEMS $ns" | awk '{printf "%.3f", $1 / $2}')
  echo "$r	$mem	$file	$(echo "$file $mem" | awk '{printf "%.0f%%", 100 * $1 / $2}')"
done
echo "($ELEMS elements a run; $(nproc) cores)"
