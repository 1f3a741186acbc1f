"""Writes a tiny llama-architecture GGUF whose logits numpy can reproduce exactly.

Every block's output projections (attn_output, ffn_down) are zero, so the residual stream
at a position is its token's embedding and the logits are
    output.weight @ rmsnorm(embedding[token]),
which `logits()` below computes for any token ids. The vocabulary (32,000 SentencePiece
tokens) is copied from a vocab-only GGUF of llama.cpp's own test models.

    python3 tiny_model.py VOCAB.gguf OUT.gguf --seed S [--noise F]
    python3 tiny_model.py VOCAB.gguf OUT.npy --seed S [--noise F] --logits-of BASE.kld [--tokens-out T.npy]

--noise F adds F·N(0, 1) times the weights' scale to output.weight (a "quantised" twin:
the same seed with noise gives Q, without gives P). --logits-of writes, instead of a model,
the model's f32 logits at every position of every chunk of a llama.cpp `.kld` file
(n_chunk·n_ctx rows, from the file's own tokens), and --tokens-out those tokens (int32).
"""

import argparse
import sys

import numpy as np

N_EMBD, N_LAYER, N_HEAD, N_FF, N_CTX, EPS = 64, 2, 4, 128, 512, 1e-5
W_SCALE = 0.4  # logits' standard deviation ≈ W_SCALE·√N_EMBD ≈ 3.2 nats


def weights(seed, n_vocab, noise):
    rng = np.random.default_rng(seed)
    embd = rng.standard_normal((n_vocab, N_EMBD)).astype(np.float32)
    out = (W_SCALE * rng.standard_normal((n_vocab, N_EMBD))).astype(np.float32)
    if noise:
        noisy = np.random.default_rng(seed + 1_000_003)
        out = out + (noise * W_SCALE * noisy.standard_normal(out.shape)).astype(np.float32)
    return embd, out


def logits(embd, out, tokens):
    """f32 logits of every token id in `tokens` (rows = positions), as llama.cpp forms them."""
    x = embd[tokens].astype(np.float32)
    # ggml_rms_norm: the mean square summed in double, the scale formed in f32.
    ms = (x.astype(np.float64) ** 2).mean(axis=1)
    scale = (1.0 / np.sqrt((ms + EPS).astype(np.float32))).astype(np.float32)
    h = x * scale[:, None]
    return (h.astype(np.float64) @ out.T.astype(np.float64)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--logits-of")
    ap.add_argument("--tokens-out")
    a = ap.parse_args()
    import gguf

    if a.logits_of:
        with open(a.logits_of, "rb") as fh:
            head = fh.read(20)
            assert head[:8] == b"_logits_", "not a llama.cpp .kld file"
            n_ctx, n_vocab, n_chunk = np.frombuffer(head[8:], np.int32)
            tokens = np.frombuffer(fh.read(4 * n_ctx * n_chunk), np.int32)
        embd, out = weights(a.seed, int(n_vocab), a.noise)
        np.save(a.out, logits(embd, out, tokens))
        if a.tokens_out:
            np.save(a.tokens_out, tokens)
        print(f"{a.out}: logits of {len(tokens)} positions", file=sys.stderr)
        return

    r = gguf.GGUFReader(a.vocab)
    f = r.fields
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]) for i in f["tokenizer.ggml.tokens"].data]
    scores = [float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    one = lambda k: int(f[k].parts[f[k].data[0]][0])
    n_vocab = len(toks)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("kldiv tiny check model")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0)  # all f32
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(one("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(one("tokenizer.ggml.eos_token_id"))
    w.add_unk_token_id(one("tokenizer.ggml.unknown_token_id"))
    w.add_add_bos_token(True)

    embd, out = weights(a.seed, n_vocab, a.noise)
    rng = np.random.default_rng(a.seed + 7)
    small = lambda *shape: (0.1 * rng.standard_normal(shape)).astype(np.float32)
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    w.add_tensor("output.weight", out)
    for i in range(N_LAYER):
        b = f"blk.{i}."
        w.add_tensor(b + "attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(b + "attn_q.weight", small(N_EMBD, N_EMBD))
        w.add_tensor(b + "attn_k.weight", small(N_EMBD, N_EMBD))
        w.add_tensor(b + "attn_v.weight", small(N_EMBD, N_EMBD))
        w.add_tensor(b + "attn_output.weight", np.zeros((N_EMBD, N_EMBD), np.float32))
        w.add_tensor(b + "ffn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(b + "ffn_gate.weight", small(N_FF, N_EMBD))
        w.add_tensor(b + "ffn_up.weight", small(N_FF, N_EMBD))
        w.add_tensor(b + "ffn_down.weight", np.zeros((N_EMBD, N_FF), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{a.out}: llama, {n_vocab} tokens, seed {a.seed}, noise {a.noise}", file=sys.stderr)


if __name__ == "__main__":
    main()
