#!/usr/bin/env python3
"""Peer comparison for the CUDA backend (issue 6, DESIGN.md 8): times PyTorch's
scaled_dot_product_attention with the flash and cuDNN backends on the shapes `ela bench attn`
ran (bf16, d 128, Hq 32, Hkv 8: causal prefill at 32K and 128K, decode at 128K keys), in the same
run on the same GPU, and prints our time over theirs as a table (also written as JSON and
Markdown). Our numbers come from the bench-*.json files `ela bench attn --json` wrote.

FLOPs are counted as ela does: 4 d Hq per visible (query, key) pair; bytes for decode are
K + V + Q + O. GQA: SDPA gets k and v with Hkv heads and enable_gqa=True; a backend that refuses
that gets them repeated to Hq heads (the same FLOPs; decode bytes then count the real K/V read,
Hq/Hkv times more, so its TB/s is reported on ela's byte count for a fair time ratio).
Timing: CUDA events around each call after warm-up; the median is reported."""
import argparse
import glob
import json
import math
import os
import statistics
import sys


def visible_pairs(L, n, causal):
    return L * (n - L) + L * (L + 1) / 2 if causal else L * n


def time_sdpa(torch, F, backend, L, n, hq, hkv, d, causal, min_seconds, max_iters):
    from torch.nn.attention import sdpa_kernel

    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(1)
    q = torch.rand(1, hq, L, d, device=dev, dtype=torch.bfloat16, generator=g) * 2 - 1
    k = torch.rand(1, hkv, n, d, device=dev, dtype=torch.bfloat16, generator=g) * 2 - 1
    v = torch.rand(1, hkv, n, d, device=dev, dtype=torch.bfloat16, generator=g) * 2 - 1
    # Decode (L = 1 at the end of n keys) sees every key: not causal in SDPA's top-left terms.
    is_causal = causal and L > 1
    gqa = "native"

    def call(kk, vv, enable_gqa):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, kk, vv, is_causal=is_causal,
                                                  enable_gqa=enable_gqa)

    try:
        call(k, v, True)
        fn = lambda: call(k, v, True)  # noqa: E731
    except Exception as e:  # the backend does not take GQA: repeat K/V to Hq heads
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        kr = k.repeat_interleave(hq // hkv, dim=1)
        vr = v.repeat_interleave(hq // hkv, dim=1)
        try:
            call(kr, vr, False)
        except Exception as e2:
            return {"error": f"{first}; with repeated K/V: {str(e2).splitlines()[0][:200]}"}
        gqa = "repeated K/V (enable_gqa refused: %s)" % first
        fn = lambda: call(kr, vr, False)  # noqa: E731
    torch.cuda.synchronize()
    # Warm-up: at least 2 calls and 0.2 s.
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    spent, warm = 0.0, 0
    while warm < 2 or spent < 0.2:
        start.record()
        fn()
        end.record()
        end.synchronize()
        spent += start.elapsed_time(end) / 1e3
        warm += 1
    times = []
    while len(times) < 3 or (sum(times) < min_seconds and len(times) < max_iters):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return {"ms": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times), "iters": len(times),
            "gqa": gqa}


def load_ours(directory):
    ours = []
    for path in sorted(glob.glob(os.path.join(directory, "bench-*.json"))):
        try:
            with open(path) as f:
                r = json.load(f)
        except (OSError, ValueError) as e:
            print(f"peer: skipping {path}: {e}", file=sys.stderr)
            continue
        if r.get("bench") == "attn_dense":
            r["file"] = os.path.basename(path)
            ours.append(r)
    return ours


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours-dir", default="out/cuda", help="where ela's bench-*.json are")
    ap.add_argument("--json", default=None, help="write the comparison here")
    ap.add_argument("--table", default=None, help="write the Markdown table here")
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per case")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend

    if not torch.cuda.is_available():
        print("peer: no CUDA device", file=sys.stderr)
        return 1
    device = torch.cuda.get_device_name(0)
    ours = load_ours(args.ours_dir)
    if not ours:
        print(f"peer: no ela results in {args.ours_dir}/bench-*.json; timing the default shapes",
              file=sys.stderr)
        ours = [{"mode": m, "n": n, "q": 1 if m == "decode" else n, "hq": 32, "hkv": 8, "d": 128,
                 "causal": 1, "dtype": "bf16", "ms": None, "file": None}
                for m, n in (("prefill", 32768), ("prefill", 131072), ("decode", 131072))]
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    rows = []
    for r in ours:
        if r.get("dtype") != "bf16":
            print(f"peer: {r.get('file')}: SDPA is timed in bf16 only, skipping "
                  f"{r.get('dtype')}", file=sys.stderr)
            continue
        L, n, hq, hkv, d = int(r["q"]), int(r["n"]), int(r["hq"]), int(r["hkv"]), int(r["d"])
        causal = bool(r["causal"])
        flops = 4.0 * d * hq * visible_pairs(L, n, causal)
        esize = 2
        bytes_ = 2.0 * hkv * n * d * esize + L * hq * d * esize + L * hq * d * (
            4 if r.get("odtype", "f32") == "f32" else 2)
        row = {"mode": r["mode"], "L": L, "n": n, "hq": hq, "hkv": hkv, "d": d,
               "causal": causal, "flops": flops, "bytes": bytes_,
               "ours_ms": r.get("ms"), "ours_backend": r.get("backend"), "peers": {}}
        for name, be in backends:
            torch.cuda.empty_cache()
            res = time_sdpa(torch, F, be, L, n, hq, hkv, d, causal, args.seconds, 1000)
            row["peers"][name] = res
            print(f"peer: {r['mode']} n={n} {name}: {res}", flush=True)
        rows.append(row)

    def tflops(row, ms):
        return row["flops"] / (ms * 1e-3) / 1e12 if ms else float("nan")

    def tbps(row, ms):
        return row["bytes"] / (ms * 1e-3) / 1e12 if ms else float("nan")

    lines = [f"GPU: {device}; torch {torch.__version__}; bf16, causal prefill and decode; "
             "ratio = their time / our time (> 1: ela is faster)", "",
             "| shape | ela ms | ela TFLOP/s | ela TB/s | flash ms | flash TFLOP/s | ela vs flash "
             "| cuDNN ms | cuDNN TFLOP/s | ela vs cuDNN |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        shape = (f"{row['mode']} L={row['L']} n={row['n']} Hq={row['hq']} Hkv={row['hkv']} "
                 f"d={row['d']}")
        cells = [shape]
        om = row["ours_ms"]
        cells += [f"{om:.3f}" if om else "-", f"{tflops(row, om):.1f}" if om else "-",
                  f"{tbps(row, om):.2f}" if om else "-"]
        for name in ("flash", "cudnn"):
            pr = row["peers"][name]
            if "error" in pr:
                cells += ["error", "-", "-"]
                continue
            ratio = pr["ms"] / om if om else float("nan")
            row["peers"][name]["ratio_their_time_over_ours"] = ratio
            row["peers"][name]["tflops"] = tflops(row, pr["ms"])
            row["peers"][name]["tbps"] = tbps(row, pr["ms"])
            cells += [f"{pr['ms']:.3f}", f"{tflops(row, pr['ms']):.1f}",
                      f"{ratio:.2f}x" if om else "-"]
        if om:
            row["ours_tflops"] = tflops(row, om)
            row["ours_tbps"] = tbps(row, om)
        lines.append("| " + " | ".join(cells) + " |")
    for row in rows:
        for name in ("flash", "cudnn"):
            g = row["peers"][name].get("gqa")
            if g and g != "native":
                lines.append(f"\nnote: {row['mode']} n={row['n']} {name}: {g}")
    table = "\n".join(lines)
    print(table)
    if args.table:
        with open(args.table, "w") as f:
            f.write(table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "rows": rows}, f, indent=1,
                      default=lambda x: None if isinstance(x, float) and math.isnan(x) else x)
    return 0


if __name__ == "__main__":
    sys.exit(main())
