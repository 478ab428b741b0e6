#!/usr/bin/python3
"""A random-weight GGUF with the shape of a real model, for decode-speed measurements where no
checkpoint can be downloaded (issue 4). Default: Qwen2.5-0.5B's shape (hidden 896, 24 layers,
14 heads, 2 KV heads, head_dim 64, ffn 4864, vocab 151936, tied embeddings, QKV bias) with
q8_0 matrices. Weights are random int8 with a fixed scale: the model says nothing sensible, but
reads exactly the bytes a real one does. Needs numpy (Debian: python3-numpy).

    /usr/bin/python3 tools/make_random_gguf.py OUT.gguf [q8_0|f16]
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures"))
import gguf_writer as gw  # noqa: E402

HIDDEN, LAYERS, HEADS, KV, HEAD_DIM, FFN, VOCAB = 896, 24, 14, 2, 64, 4864, 151936


def main():
    out = sys.argv[1]
    wtype = sys.argv[2] if len(sys.argv) > 2 else "q8_0"
    rng = np.random.default_rng(0)
    w = gw.GGUFWriter()
    a = "qwen2"
    w.add("general.architecture", gw.T_STRING, a)
    w.add("general.name", gw.T_STRING, "random-qwen2.5-0.5b-shape")
    w.add(f"{a}.context_length", gw.T_UINT32, 32768)
    w.add(f"{a}.embedding_length", gw.T_UINT32, HIDDEN)
    w.add(f"{a}.block_count", gw.T_UINT32, LAYERS)
    w.add(f"{a}.feed_forward_length", gw.T_UINT32, FFN)
    w.add(f"{a}.attention.head_count", gw.T_UINT32, HEADS)
    w.add(f"{a}.attention.head_count_kv", gw.T_UINT32, KV)
    w.add(f"{a}.attention.layer_norm_rms_epsilon", gw.T_FLOAT32, 1e-6)
    w.add(f"{a}.rope.freq_base", gw.T_FLOAT32, 1000000.0)

    def matrix(name, rows, cols):
        if wtype == "q8_0":
            blocks = np.empty(rows * cols // 32, dtype=[("d", "<f2"), ("qs", "i1", 32)])
            blocks["d"] = np.float16(0.02 / 127 * 4)
            blocks["qs"] = rng.integers(-32, 33, size=(blocks.shape[0], 32), dtype=np.int8)
            w.add_raw(name, (rows, cols), gw.GGML_Q8_0, blocks.tobytes())
        else:
            x = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype("<f2")
            w.add_raw(name, (rows, cols), gw.GGML_F16, x.tobytes())

    def vector(name, n, value=None):
        x = np.full(n, value, np.float32) if value is not None else \
            (rng.standard_normal(n, dtype=np.float32) * 0.02)
        w.add_raw(name, (n,), gw.GGML_F32, x.astype("<f4").tobytes())

    matrix("token_embd.weight", VOCAB, HIDDEN)
    vector("output_norm.weight", HIDDEN, 1.0)
    for i in range(LAYERS):
        vector(f"blk.{i}.attn_norm.weight", HIDDEN, 1.0)
        matrix(f"blk.{i}.attn_q.weight", HEADS * HEAD_DIM, HIDDEN)
        matrix(f"blk.{i}.attn_k.weight", KV * HEAD_DIM, HIDDEN)
        matrix(f"blk.{i}.attn_v.weight", KV * HEAD_DIM, HIDDEN)
        vector(f"blk.{i}.attn_q.bias", HEADS * HEAD_DIM)
        vector(f"blk.{i}.attn_k.bias", KV * HEAD_DIM)
        vector(f"blk.{i}.attn_v.bias", KV * HEAD_DIM)
        matrix(f"blk.{i}.attn_output.weight", HIDDEN, HEADS * HEAD_DIM)
        vector(f"blk.{i}.ffn_norm.weight", HIDDEN, 1.0)
        matrix(f"blk.{i}.ffn_gate.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", HIDDEN, FFN)
    w.write(out)
    print(f"{out}: {os.path.getsize(out) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
