#!/usr/bin/env python3
"""Writes a random-weight f16 Llama GGUF for the llama.cpp benchmark: no download.

    make_gguf.py --gguf-py DIR --out FILE [--layers 16] [--hidden 2048] [--ff 8192] [--vocab 32000]

16 layers of hidden 2048 (32 heads, 8 KV heads of 64, feed-forward 8192), the shape of a ~1B
Llama. The tokenizer is a SentencePiece-style vocabulary: <unk>, <s>, </s>, the 256 byte tokens
and lower-case pieces, enough for any prompt (byte fallback). Weights come from a fixed seed,
scaled so that activations stay finite, so greedy output is the same on every run.
"""
import argparse
import os
import sys

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder")
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ff", type=int, default=8192)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    sys.path.insert(0, a.gguf_py)
    # gguf-py needs PyYAML; the staged llama folder carries a pure-Python copy beside it.
    pydeps = os.path.join(os.path.dirname(os.path.abspath(a.gguf_py)), "pydeps")
    if os.path.isdir(pydeps):
        sys.path.insert(1, pydeps)
    import gguf

    head_dim = a.hidden // a.heads
    kv = a.kv_heads * head_dim
    rng = np.random.default_rng(a.seed)

    def w(rows, cols):
        # Normal(0, 1/sqrt(cols)): unit-variance outputs, finite through 16 layers.
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(np.float16)

    tokens, scores, types = [b"<unk>", b"<s>", b"</s>"], [0.0, 0.0, 0.0], [2, 3, 3]
    for b in range(256):
        tokens.append(f"<0x{b:02X}>".encode())
        scores.append(0.0)
        types.append(6)  # BYTE
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = ["\u2581" + c for c in letters] + list(letters)
    pieces += ["\u2581" + x + y for x in letters for y in letters] + [x + y for x in letters for y in letters]
    i = 0
    while len(tokens) < a.vocab:
        piece = pieces[i] if i < len(pieces) else f"\u2581t{i}"
        tokens.append(piece.encode())
        scores.append(-float(i))
        types.append(1)  # NORMAL
        i += 1

    wr = gguf.GGUFWriter(a.out, "llama")
    wr.add_name("vgpu-bench-random-llama")
    wr.add_context_length(4096)
    wr.add_embedding_length(a.hidden)
    wr.add_block_count(a.layers)
    wr.add_feed_forward_length(a.ff)
    wr.add_head_count(a.heads)
    wr.add_head_count_kv(a.kv_heads)
    wr.add_rope_dimension_count(head_dim)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_vocab_size(a.vocab)
    wr.add_file_type(1)  # MOSTLY_F16
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    wr.add_unk_token_id(0)
    wr.add_add_bos_token(True)
    wr.add_add_eos_token(False)

    ones = np.ones(a.hidden, dtype=np.float32)
    wr.add_tensor("token_embd.weight", w(a.vocab, a.hidden))
    for l in range(a.layers):
        wr.add_tensor(f"blk.{l}.attn_norm.weight", ones)
        wr.add_tensor(f"blk.{l}.attn_q.weight", w(a.hidden, a.hidden))
        wr.add_tensor(f"blk.{l}.attn_k.weight", w(kv, a.hidden))
        wr.add_tensor(f"blk.{l}.attn_v.weight", w(kv, a.hidden))
        wr.add_tensor(f"blk.{l}.attn_output.weight", w(a.hidden, a.hidden))
        wr.add_tensor(f"blk.{l}.ffn_norm.weight", ones)
        wr.add_tensor(f"blk.{l}.ffn_gate.weight", w(a.ff, a.hidden))
        wr.add_tensor(f"blk.{l}.ffn_up.weight", w(a.ff, a.hidden))
        wr.add_tensor(f"blk.{l}.ffn_down.weight", w(a.hidden, a.ff))
    wr.add_tensor("output_norm.weight", ones)
    wr.add_tensor("output.weight", w(a.vocab, a.hidden))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
