#!/bin/bash
# kldiv against llama.cpp's own llama-perplexity, on a tiny generated model (no download of
# a model; ~15 minutes on 2 cores, most of it building llama.cpp):
#   scripts/llama-check/run.sh            # K=target/release/kldiv, WORK=/tmp/kldiv-llama-check
# 1. builds llama-perplexity from the llama.cpp tree inside PyPI's llama-cpp-python sdist
#    (or LLAMA=path/to/llama.cpp), with its vocab-only test model for the tokenizer;
# 2. writes two tiny llama models P and Q (tiny_model.py: logits numpy reproduces);
# 3. llama.cpp writes P's base (.kld) and prints its KLD report of Q against it;
# 4. kldiv compares the same base with Q's logits from numpy: --llama-compat must print every
#    statistic as llama.cpp does (to its printed precision), the exact mode is shown beside;
# 5. kldiv export-kld writes P's base from P's logits: compared byte for byte with
#    llama.cpp's, and read back by llama-perplexity, whose report must match step 3's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
K=$(realpath -m "${K:-target/release/kldiv}")
[ -x "$K" ] || { echo "no kldiv binary at $K: cargo build --release (or K=path)" >&2; exit 2; }
WORK=${WORK:-/tmp/kldiv-llama-check}
CHUNKS=${CHUNKS:-24}
NCTX=${NCTX:-128}
mkdir -p "$WORK"
cd "$WORK"

if [ -z "${LLAMA:-}" ]; then
  if [ ! -d llama_cpp_python-0.3.36 ]; then
    python3 - <<'PY'
import json, urllib.parse, urllib.request
api = "https://pypi.org/pypi/llama-cpp-python/json"
d = json.load(urllib.request.urlopen(api))
files = d.get("releases", {}).get("0.3.36") or d["urls"]
url = next(u["url"] for u in files if u["packagetype"] == "sdist" and "0.3.36" in u["url"])
# Mirrors give relative links; files.pythonhosted.org serves the same path.
path = urllib.parse.urlparse(urllib.parse.urljoin(api, url)).path
path = path[path.index("/packages/"):]
urllib.request.urlretrieve("https://files.pythonhosted.org" + path, "llama.tar.gz")
PY
    tar xzf llama.tar.gz
  fi
  LLAMA=$WORK/llama_cpp_python-0.3.36/vendor/llama.cpp
fi
PERP=$LLAMA/build/bin/llama-perplexity
if [ ! -x "$PERP" ]; then
  command -v cmake > /dev/null || python3 -m pip install --quiet cmake
  cmake -S "$LLAMA" -B "$LLAMA/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF > cmake.log
  cmake --build "$LLAMA/build" --target llama-perplexity -j"$(nproc)" > build.log 2>&1
fi
export PYTHONPATH=$LLAMA/gguf-py   # llama.cpp's own GGUF writer (needs numpy, pyyaml)
python3 -c "import numpy, yaml" 2> /dev/null || python3 -m pip install --quiet numpy pyyaml
VOCAB=$LLAMA/models/ggml-vocab-llama-spm.gguf
model() { python3 "$here/tiny_model.py" "$VOCAB" "$@"; }
model p.gguf --seed 1
model q.gguf --seed 1 --noise 0.1
cp "$LLAMA/README.md" text.txt   # fixed text of the pinned llama.cpp tree (~8k tokens)

run() { "$PERP" -t "$(nproc)" -c "$NCTX" "$@"; }
run -m p.gguf -f text.txt --chunks "$CHUNKS" --kl-divergence-base base.kld > base.log 2>&1
run -m q.gguf --kl-divergence-base base.kld --kl-divergence > llama.txt 2>&1
model q_logits.npy --seed 1 --noise 0.1 --logits-of base.kld
model p_logits.npy --seed 1 --logits-of base.kld --tokens-out tokens.npy

echo "== llama.cpp against kldiv compare --llama-compat"
"$K" compare base.kld q_logits.npy --llama-compat > kldiv_compat.txt
# Q's logits come from numpy, not ggml (~1e-6 nats apart): a last printed digit may move,
# and the 13-digit PPL(Q) lines by ~1e-7 of their value.
python3 "$here/compare_reports.py" llama.txt kldiv_compat.txt --tolerance-digits 1 --relative 1e-6 || status=1
echo "== the same with Q's logits of the scored rows only (n_ctx/2 … n_ctx − 2 of each chunk)"
python3 -c "
import numpy as np
l = np.load('q_logits.npy'); n = $NCTX
np.save('q_scored.npy', l.reshape(-1, n, l.shape[1])[:, n // 2:n - 1].reshape(-1, l.shape[1]))"
"$K" compare base.kld q_scored.npy --llama-compat > kldiv_scored.txt
python3 "$here/compare_reports.py" kldiv_compat.txt kldiv_scored.txt || status=1
echo "== llama.cpp against kldiv compare (exact: every term, the base renormalised)"
"$K" compare base.kld q_logits.npy > kldiv_exact.txt
python3 "$here/compare_reports.py" llama.txt kldiv_exact.txt --relative 1 || true

echo "== kldiv export-kld against llama.cpp's base"
"$K" export-kld p_logits.npy --tokens tokens.npy --n-ctx "$NCTX" -o ours.kld
python3 - <<'PY'
import numpy as np
a, b = open("base.kld", "rb").read(), open("ours.kld", "rb").read()
assert len(a) == len(b), f"sizes {len(a)} and {len(b)}"
n_ctx, n_vocab, n_chunk = np.frombuffer(a[8:20], np.int32)
head = 20 + 4 * n_ctx * n_chunk
print("header and tokens:", "identical" if a[:head] == b[:head] else "DIFFER")
nv = 2 * ((n_vocab + 1) // 2) + 4
ra = np.frombuffer(a[head:], np.uint16).reshape(-1, nv)
rb = np.frombuffer(b[head:], np.uint16).reshape(-1, nv)
fa, fb = ra[:, :4].copy().view(np.float32), rb[:, :4].copy().view(np.float32)
ulps = lambda x, y: np.abs(x.view(np.int32).astype(np.int64) - y.view(np.int32).astype(np.int64))
print(f"records: {len(ra)}; scale: {np.count_nonzero(fa[:, 0] != fb[:, 0])} differ "
      f"(max {ulps(fa[:, 0], fb[:, 0]).max()} ulp); min_log_prob: "
      f"{np.count_nonzero(fa[:, 1] != fb[:, 1])} differ (max {ulps(fa[:, 1], fb[:, 1]).max()} ulp)")
qa, qb = ra[:, 4:4 + n_vocab].astype(np.int64), rb[:, 4:4 + n_vocab].astype(np.int64)
d = np.abs(qa - qb)
print(f"quantised values: {d.size}, equal {np.count_nonzero(d == 0)}, "
      f"off by one {np.count_nonzero(d == 1)}, more {np.count_nonzero(d > 1)}")
PY
run -m q.gguf --kl-divergence-base ours.kld --kl-divergence > llama_ours.txt 2>&1
echo "== llama.cpp's report with kldiv's base against its own base"
# 0.17% of the quantised values differ by one (P's logits from numpy, each within 0.013 of a
# rounding boundary): KLD percentiles move by a unit or two of their last digit.
python3 "$here/compare_reports.py" llama.txt llama_ours.txt --tolerance-digits 2 --relative 1e-6 || status=1
exit "${status:-0}"
