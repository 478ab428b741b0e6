#!/usr/bin/env bash
# CUDA backend on a GPU machine, in one call (DESIGN.md 7-8): configure and build (Release, CUDA
# plugin required), the `cuda` tests, compute-sanitizer on the parity test, ela's attention
# benchmarks (bf16, d = 128, Hq = 32, Hkv = 8: causal prefill at 32K and 128K, decode at 128K
# keys), and PyTorch SDPA (flash and cuDNN backends) on the same shapes in the same run
# (tools/bench_sdpa_peer.py), with our time over theirs. Everything lands in $OUT (default
# out/cuda): run.log (all output), bench-*.json, peer.json and peer.md (the table).
#
# usage: tools/cuda_device_run.sh [STAGE...]   stages, run in the order given: build test
# sanitize bench peer profile (default: the first five in that order; profile runs ncu)
# environment: OUT, BUILD (build-cuda-dev), ARCHS (CMAKE_CUDA_ARCHITECTURES, default: the
# device's own, e.g. 90), JOBS (nproc), SANITIZE_TIMEOUT (420 s), BENCH_ARGS (extra options for
# every `ela bench attn`), SASS=1 (append the prefill kernel's SASS to run.log).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
BUILD=${BUILD:-build-cuda-dev}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
LOG="$OUT/run.log"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(build test sanitize bench peer)
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
    || { say "build failed"; exit 1; }
  # Registers and spills of every kernel, for the record.
  for cu in backends/cuda/attn_dense_mma.cu backends/cuda/attn_dense_decode.cu; do
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
  ELA_TEST_VERBOSE=1 run ctest --test-dir "$BUILD" -L cuda -V --timeout 900 || status=1
}

stage_sanitize() {
  say "compute-sanitizer (memcheck, then racecheck and synccheck) on the parity test, quick cases"
  SAN_T=${SANITIZE_TIMEOUT:-420}
  ELA_TEST_QUICK=1 run timeout "$SAN_T" compute-sanitizer --tool memcheck --error-exitcode 9 \
    --leak-check no "$BUILD/bin/test_backend_parity_cuda" || status=1
  for tool in racecheck synccheck; do
    # Small cases of each kernel: tensor-core prefill (117), CUDA-core decode with 4 row groups
    # (128), tensor-core decode with its per-warp cp.async rings (129); all configurations.
    for c in 117 128 129; do
      ELA_TEST_CASE=$c run timeout 240 compute-sanitizer --tool "$tool" --error-exitcode 9 \
        "$BUILD/bin/test_backend_parity_cuda" || status=1
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
    build|test|sanitize|bench|peer|profile) "stage_$st" ;;
    *) say "unknown stage '$st' (build test sanitize bench peer profile)"; status=1 ;;
  esac
done

say "done (status $status)"
exit $status
