#!/usr/bin/env bash
# One command for any machine with a GPU (a few minutes): the adapter, then for W1–W4 in f32
# and bf16 the end-to-end and kernel-only GB/s (timestamp queries) against the adapter's own
# read limit, a plain two-stream read kernel timed the same way ("% limit" of the gpu rows;
# the goal is ≥ 70% on W1, W3 and W4). Extra arguments go to `kldiv bench` (--quick: the
# smoke test CI runs on lavapipe). Needs a Vulkan (or Metal/DX12) driver; never takes GL.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
# The default members (library and CLI), as `cargo test` builds them: the same features, so
# after the tests this reuses their compiled library instead of building it again.
cargo build --release -q
k=target/release/kldiv
"$k" info
for dtype in f32 bf16; do
    "$k" bench --device gpu --shapes W1,W2,W3,W4 --dtype "$dtype" "$@"
done
