#!/usr/bin/env bash
# Two builds of kldiv, run alternately on the same W4 logit files (see report-speed.sh for
# making them): median wall time of each over N runs. Alternating keeps a noisy machine's
# drift out of the ratio.
#   A=old/kldiv B=target/release/kldiv N=15 DIR=/tmp/w4 scripts/ab-compare.sh [--targets /tmp/w4/t.npy]
set -euo pipefail
A=${A:?path of the first binary}
B=${B:-target/release/kldiv}
N=${N:-15}
DIR=${DIR:?directory holding p.npy and q.npy}
declare -A times
for _ in $(seq "$N"); do
  for K in "$A" "$B"; do
    t0=$(date +%s%N)
    "$K" compare "$DIR/p.npy" "$DIR/q.npy" --input logits --device cpu "$@" >/dev/null
    t1=$(date +%s%N)
    times[$K]+="$(( (t1 - t0) / 1000000 )) "
  done
done
for K in "$A" "$B"; do
  med=$(echo "${times[$K]}" | tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  echo "$K: median ${med} ms over $N runs ($*)"
done
