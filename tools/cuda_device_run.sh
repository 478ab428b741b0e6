#!/usr/bin/env bash
# CUDA backend on a GPU machine, in one call (DESIGN.md 7-8): configure and build (Release, CUDA
# plugin required), the `cuda` tests (attention parity, model ops and the fixture models),
# compute-sanitizer on the parity and model-op tests, ela's attention benchmarks (bf16, d = 128,
# Hq = 32, Hkv = 8: causal prefill at 32K and 128K, decode at 128K keys), PyTorch SDPA (flash
# and cuDNN backends) on the same shapes in the same run (tools/bench_sdpa_peer.py) with our time
# over theirs, matmul timings (GEMV weight bandwidth and prefill TFLOP/s on Llama-3-8B shapes
# against the device's copy bandwidth, and PyTorch's matmul on the same shapes), and `ela bench
# model` on random Qwen2.5-0.5B-shaped q8_0 and f16 models (tools/make_random_gguf.py), and the
# sparse policies (`ela bench sparse`: xattn, elastic, streaming prefill at 32K and 128K against
# our dense prefill; LessIsMore decode at 128K). Everything lands in $OUT (default out/cuda):
# run.log (all output), bench-*.json, peer.json and peer.md (the table), matmul.txt, model-*.txt,
# sparse.txt and sparse-*.json.
#
# usage: tools/cuda_device_run.sh [STAGE...]   stages, run in the order given: build test
# sanitize bench peer matmul model sparse profile break break_sparse (default: build test
# sanitize bench peer matmul model sparse; profile runs ncu; break builds a copy of the plugin
# with one GEMV line broken and checks that test_model_ops_gpu fails with it; break_sparse does
# the same with the block-sparse executor's streaming window and the XAttention estimate's
# causal mask, against test_backend_parity_sparse)
# environment: OUT, BUILD (build-cuda-dev), ARCHS (CMAKE_CUDA_ARCHITECTURES, default: the
# device's own, e.g. 90), JOBS (nproc), SANITIZE_TIMEOUT (420 s), BENCH_ARGS (extra options for
# every `ela bench attn`), SASS=1 (append the prefill kernel's SASS to run.log), TESTS (ctest -R
# filter for the test stage; default: every `cuda` test), SPARSE_N (lengths of the sparse
# prefill benchmarks, default 32768,131072).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
BUILD=${BUILD:-build-cuda-dev}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
LOG="$OUT/run.log"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test sanitize bench peer matmul model sparse)
start=$(date +%s)
say() { echo "=== $* ($(( $(date +%s) - start )) s)" | tee -a "$LOG"; }
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
status=0

say "machine"
run nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
if [ -z "${ARCHS:-}" ]; then
  ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
  [ -n "$ARCHS" ] || ARCHS="80;90"
fi

stage_build() {
  say "configure + build ($BUILD, CUDA architectures $ARCHS, $JOBS jobs)"
  gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  run cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DELA_CUDA=ON -DELA_VULKAN=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" || { say "configure failed"; exit 1; }
  run cmake --build "$BUILD" -j"$JOBS" --target ela-cuda ela_cli test_backend_parity_cuda \
    test_model_ops_gpu test_backend_parity_sparse test_backend_parity_tsa \
    test_backend_parity_nsa test_gather_lists || { say "build failed"; exit 1; }
  # Registers and spills of every kernel, for the record.
  for cu in backends/cuda/attn_dense_mma.cu backends/cuda/attn_dense_decode.cu \
            backends/cuda/matmul_gemv.cu backends/cuda/matmul_mma.cu backends/cuda/attn_blocks.cu \
            backends/cuda/xattn_estimate.cu; do
    nvcc -c -O3 -std=c++17 -arch=sm_"${ARCHS%%;*}" -Iinclude -I. -Ibackends/cuda -Xptxas -v \
      "$cu" -o /tmp/ptxas_probe.o 2>&1 | grep -E "Compiling entry|Used|spill" | tee -a "$LOG"
  done
  if command -v cuobjdump >/dev/null; then
    cuobjdump -sass /tmp/ptxas_probe.o >/dev/null 2>&1 || true
    nvcc -c -O3 -std=c++17 -arch=sm_"${ARCHS%%;*}" -Iinclude -I. -Ibackends/cuda \
      backends/cuda/attn_dense_mma.cu -o /tmp/mma_probe.o 2>/dev/null &&
      cuobjdump -sass /tmp/mma_probe.o | awk '/Function : .*attn_dense_mmaILi128ELb1/{f=1;next} /Function :/{f=0} f' \
        > "$BUILD/mma_d128_bf16.sass"
    grep -oE "HMMA[.A-Z0-9]*|LDSM[.A-Z0-9]*|MUFU.EX2|LDL|STL|BAR.SYNC[.A-Z]*" \
      "$BUILD/mma_d128_bf16.sass" | sort | uniq -c | tee -a "$LOG"
    if [ -n "${SASS:-}" ]; then
      echo "--- SASS of attn_dense_mma<128, bf16>" >> "$LOG"; cat "$BUILD/mma_d128_bf16.sass" >> "$LOG"
    fi
  fi
}
ELA=$BUILD/bin/ela

stage_test() {
  say "ctest -L cuda"
  run "$ELA" info
  ELA_TEST_VERBOSE=1 run ctest --test-dir "$BUILD" -L cuda ${TESTS:+-R "$TESTS"} -V --timeout 900 \
    || status=1
}

stage_sanitize() {
  say "compute-sanitizer (memcheck, then racecheck and synccheck) on the parity test, quick cases"
  SAN_T=${SANITIZE_TIMEOUT:-420}
  ELA_TEST_QUICK=1 run timeout "$SAN_T" compute-sanitizer --tool memcheck --error-exitcode 9 \
    --leak-check no "$BUILD/bin/test_backend_parity_cuda" || status=1
  ELA_TEST_ONLY=ops run timeout "$SAN_T" compute-sanitizer --tool memcheck --error-exitcode 9 \
    --leak-check no "$BUILD/bin/test_model_ops_gpu" || status=1
  # The sparse ops: every case, every configuration.
  for t in sparse tsa nsa; do
    run timeout "$SAN_T" compute-sanitizer --tool memcheck --error-exitcode 9 --leak-check no \
      "$BUILD/bin/test_backend_parity_$t" || status=1
  done
  for tool in racecheck synccheck; do
    # Small cases of each kernel: tensor-core prefill (117), CUDA-core decode with 4 row groups
    # (128), tensor-core decode with its per-warp cp.async rings (129); all configurations.
    for c in 117 128 129; do
      ELA_TEST_CASE=$c run timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$BUILD/bin/test_backend_parity_cuda" || status=1
    done
    # The sparse kernels that share memory across warps: the block-sparse executor with mask
    # bitmaps (attn_blocks 10), the tensor-core estimate with its persistent items (xattn 11),
    # LessIsMore's top-k and union (decode_select 11).
    for oc in attn_blocks:10 xattn_estimate:11 decode_select:11; do
      ELA_TEST_OP=${oc%%:*} ELA_TEST_CASE=${oc##*:} run timeout 240 compute-sanitizer \
        --tool "$tool" --error-exitcode 9 "$BUILD/bin/test_backend_parity_sparse" || status=1
    done
  done
}

stage_bench() {
  say "ela bench attn (bf16, d 128, Hq 32, Hkv 8)"
  common=(--backend cuda --hq 32 --hkv 8 --d 128 --dtype bf16 ${BENCH_ARGS:-})
  run "$ELA" bench attn "${common[@]}" --mode prefill --n 32768 --causal 1 \
    --json "$OUT/bench-prefill-32k.json" || status=1
  run "$ELA" bench attn "${common[@]}" --mode prefill --n 131072 --causal 1 \
    --json "$OUT/bench-prefill-128k.json" || status=1
  run "$ELA" bench attn "${common[@]}" --mode decode --n 131072 \
    --json "$OUT/bench-decode-128k.json" || status=1
}

stage_peer() {
  say "PyTorch SDPA (flash, cuDNN) on the same shapes"
  PYTHONUNBUFFERED=1 run python3 tools/bench_sdpa_peer.py --ours-dir "$OUT" \
    --json "$OUT/peer.json" --table "$OUT/peer.md" || status=1
}

# matmul: the GEMV's weight bandwidth at M = 1 and 8 and the prefill's TFLOP/s on Llama-3-8B's
# [4096 x 4096] and [14336 x 4096], against the device's copy bandwidth measured in the same
# run (test_model_ops_gpu with ELA_TEST_BENCH=1), then PyTorch (cuBLAS) on the same shapes.
stage_matmul() {
  say "matmul timings (ours, then PyTorch)"
  ELA_TEST_BENCH=1 run "$BUILD/bin/test_model_ops_gpu" > "$OUT/matmul.txt" || status=1
  PYTHONUNBUFFERED=1 run python3 - <<'PY' >> "$OUT/matmul.txt" || true
import torch
def t(f, it=30):
    for _ in range(3): f()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
          for _ in range(it)]
    for a, b in ev:
        a.record(); f(); b.record()
    torch.cuda.synchronize()
    ms = sorted(a.elapsed_time(b) for a, b in ev)
    return ms[len(ms) // 2]
a = torch.empty(256 << 20, dtype=torch.float16, device="cuda"); b = torch.empty_like(a)
ms = t(lambda: b.copy_(a), 10)
print(f"torch copy 512 MiB: {2 * a.numel() * 2 / ms / 1e6:.0f} GB/s read + write")
print(f"{'torch':6} {'M':>6} {'N':>6} {'K':>6} {'ms':>10} {'GB/s':>10} {'TFLOP/s':>10}")
for dt in (torch.float16, torch.bfloat16):
    for n, k in ((4096, 4096), (14336, 4096)):
        w = torch.randn(n, k, device="cuda").to(dt)
        for m in (1, 8, 128, 512, 2048):
            x = torch.randn(m, k, device="cuda").to(dt)
            ms = t(lambda: x @ w.t(), 10 if m >= 512 else 30)
            print(f"{str(dt)[6:]:6} {m:6} {n:6} {k:6} {ms:10.4f} {n * k * 2 / ms / 1e6:10.1f} "
                  f"{2 * m * n * k / ms / 1e9:10.1f}")
PY
}

# `ela bench model` on random Qwen2.5-0.5B-shaped models (q8_0 and f16 matrices): prompt and
# decode tokens/s and the weight bytes each decoded token reads.
stage_model() {
  say "ela bench model (random Qwen2.5-0.5B shape, q8_0 and f16)"
  for wt in q8_0 f16; do
    run python3 tools/make_random_gguf.py "/tmp/r-$wt.gguf" "$wt" || { status=1; continue; }
    run "$ELA" bench model --backend cuda -m "/tmp/r-$wt.gguf" --prompt 512 --gen 64 \
      --json "$OUT/bench-model-$wt.json" | tee "$OUT/model-$wt.txt" || status=1
  done
}

# The tests must notice a broken kernel: a copy of the tree whose q8_0 GEMV drops one of every
# four activations, built as a plugin of its own and loaded through ELA_PLUGIN_PATH.
stage_break() {
  say "break: a wrong q8_0 GEMV must turn test_model_ops_gpu red"
  local src=/tmp/ela-broken
  rm -rf "$src" && mkdir -p "$src"
  tar --exclude='./build*' --exclude=./out --exclude=./tests/data/npm -cf - . | tar -C "$src" -xf -
  sed -i 's/wf\[r\]\[3\] \* xv\.w/wf[r][3] * xv.z/' "$src/backends/cuda/matmul_gemv.cu"
  if cmp -s backends/cuda/matmul_gemv.cu "$src/backends/cuda/matmul_gemv.cu"; then
    say "break: the sed matched nothing"; status=1; return
  fi
  run cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DELA_CUDA=ON -DELA_VULKAN=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" > /dev/null || { status=1; return; }
  run cmake --build "$src/build" -j"$JOBS" --target ela-cuda > /dev/null || { status=1; return; }
  if ELA_TEST_ONLY=matmul ELA_PLUGIN_PATH="$src/build/lib" run "$BUILD/bin/test_model_ops_gpu" \
      > "$OUT/break.txt"; then
    say "break: the broken GEMV PASSED the test (bad)"; status=1
  else
    say "break: the broken GEMV failed the test, as it should:" \
      "$(grep -c 'FAIL\|failed' "$OUT/break.txt") lines"
  fi
}

# The sparse policies against our own dense attention in the same run (issue 6's targets at
# 128K: xattn and elastic:xa-ssa at least 3x faster than dense prefill), bf16, d 128, Hq 32,
# Hkv 8; then LessIsMore decode at 128K keys (a 32-layer schedule).
stage_sparse() {
  say "ela bench sparse (bf16, d 128, Hq 32, Hkv 8)"
  local common=(--backend cuda --dtype bf16 --hq 32 --hkv 8 --d 128)
  for pol in xattn elastic:xa-ssa elastic:fa-xa streaming; do
    # 3 calls each (medians): a single call also pays the first launch of each kernel and the
    # first growth of the memory pool for the estimate's scratch
    run "$ELA" bench sparse "${common[@]}" --n "${SPARSE_N:-32768,131072}" --policy "$pol" \
      --iters 3 --json "$OUT/sparse-${pol//:/-}.json" | tee -a "$OUT/sparse.txt" || status=1
  done
  # 100 decode steps: with a handful the GPU is not yet at its clock
  run "$ELA" bench sparse "${common[@]}" --mode decode --policy lessismore:2048 --n 131072 \
    --iters 100 --json "$OUT/sparse-lessismore.json" | tee -a "$OUT/sparse.txt" || status=1
}

# The sparse parity test must notice broken kernels: a copy of the tree whose block-sparse
# executor drops the oldest block of every streaming window and whose tensor-core estimate
# leaves every other reduced key out of its softmax, built as a plugin of its own and loaded
# through ELA_PLUGIN_PATH. (Masking only each reduced row's own key went unnoticed: the masks
# compare selections, which one key of a row rarely moves.)
stage_break_sparse() {
  say "break_sparse: a wrong streaming window and a wrong estimate softmax must fail the test"
  local src=/tmp/ela-broken-sparse
  rm -rf "$src" && mkdir -p "$src"
  tar --exclude='./build*' --exclude=./out --exclude=./tests/data/npm -cf - . | tar -C "$src" -xf -
  sed -i 's/if (J > s->M - s->local)/if (J > s->M - s->local + 1)/' "$src/backends/cuda/attn_blocks.cu"
  sed -i 's/float v = attn_exp2(acc\[mt\]\[nt\]\[2 \* rr\] - m_use) +/float v = 0.0f +/' \
    "$src/backends/cuda/xattn_estimate.cu"
  if cmp -s backends/cuda/attn_blocks.cu "$src/backends/cuda/attn_blocks.cu" ||
     cmp -s backends/cuda/xattn_estimate.cu "$src/backends/cuda/xattn_estimate.cu"; then
    say "break_sparse: a sed matched nothing"; status=1; return
  fi
  run cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DELA_CUDA=ON -DELA_VULKAN=OFF \
      -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" > /dev/null || { status=1; return; }
  run cmake --build "$src/build" -j"$JOBS" --target ela-cuda > /dev/null || { status=1; return; }
  for op in attn_blocks xattn_estimate; do
    if ELA_TEST_OP=$op ELA_PLUGIN_PATH="$src/build/lib" run \
        "$BUILD/bin/test_backend_parity_sparse" > "$OUT/break-$op.txt"; then
      say "break_sparse: the broken $op PASSED the test (bad)"; status=1
    else
      say "break_sparse: the broken $op failed the test, as it should:" \
        "$(grep -c 'CHECK failed' "$OUT/break-$op.txt") failed checks"
    fi
  done
}

# Nsight Compute on one call of each fast kernel (16K prefill, 128K decode): the sections that
# say whether a kernel is bound by tensor cores, shared memory, DRAM or stalls.
stage_profile() {
  say "ncu: tensor-core prefill and split-K decode kernels"
  local sections=(--section SpeedOfLight --section Occupancy --section WarpStateStats
                  --section LaunchStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis)
  local stalls=(--metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio")
  run timeout 240 ncu --kernel-name regex:attn_dense_mma --launch-count 1 "${sections[@]}" "${stalls[@]}" \
    "$ELA" bench attn --backend cuda --mode prefill --n 16384 --hq 32 --hkv 8 --d 128 \
    --dtype bf16 --iters 1 --warmup 0 || status=1
  run timeout 240 ncu --kernel-name regex:attn_dense_decode --launch-count 1 "${sections[@]}" "${stalls[@]}" \
    "$ELA" bench attn --backend cuda --mode decode --n 131072 --hq 32 --hkv 8 --d 128 \
    --dtype bf16 --iters 1 --warmup 0 || status=1
}

for st in "${stages[@]}"; do
  case "$st" in
    build|test|sanitize|bench|peer|matmul|model|sparse|profile|break|break_sparse) "stage_$st" ;;
    *) say "unknown stage '$st' (build test sanitize bench peer matmul model sparse profile break break_sparse)"
       status=1 ;;
  esac
done

say "done (status $status)"
exit $status
