#!/usr/bin/env bash
# End-to-end `kldiv compare` on W4-shaped logit files (1024 × 128256 f32, 2 × 525 MB, in the
# page cache after the first run), KL alone against the whole report: targets (PPL, Δp),
# agreement, and more divergences. Median of 7 runs each. Needs python3 with numpy.
set -euo pipefail
K=${K:-target/release/kldiv}
DIR=${DIR:-$(mktemp -d)}
if [ ! -f "$DIR/p.npy" ]; then
  python3 - "$DIR" <<'PY'
import sys, numpy as np
d = sys.argv[1]
r = np.random.default_rng(1)
a = 2 * r.standard_normal((1024, 128256), dtype=np.float32)
np.save(f"{d}/p.npy", a)
np.save(f"{d}/q.npy", a + np.float32(0.1) * r.standard_normal(a.shape, dtype=np.float32))
t = np.argmax(a + r.gumbel(size=a.shape).astype(np.float32), axis=1).astype(np.int32)
np.save(f"{d}/t.npy", t)
PY
fi
run() {
  local ts=()
  for _ in 1 2 3 4 5 6 7; do
    local t0 t1
    t0=$(date +%s.%N)
    "$K" compare "$DIR/p.npy" "$DIR/q.npy" --input logits "$@" >/dev/null
    t1=$(date +%s.%N)
    ts+=("$(echo "$t1 - $t0" | bc)")
  done
  printf '%s\t%s\n' "$(printf '%s\n' "${ts[@]}" | sort -n | sed -n 4p)" "${*:-(kl only)}"
}
echo "median s	arguments"
run
run --targets "$DIR/t.npy"
run --targets "$DIR/t.npy" --agreement
run --divergence kl,reverse-kl --targets "$DIR/t.npy" --agreement
run --divergence kl,reverse-kl,js --targets "$DIR/t.npy" --agreement
