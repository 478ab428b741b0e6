#!/usr/bin/env bash
# Vulkan backend on the GPU machine in one call: Vulkan loader from the carried .debs, the
# NVIDIA ICD, build (Release, Vulkan plugin, carried glslangValidator and headers), then stages:
#   dense     the dense-attention parity test under the carried Khronos validation layer, then
#             `ela bench attn --backend vulkan` (f16, d 128, Hq 32, Hkv 8: causal prefill at 8K
#             and 32K, decode at 32K and 128K keys) on the default paths (cooperative-matrix
#             prefill, register decode) and on the tiled FMA shader (ELA_VK_DISABLE=
#             coopmat,decode), validation off; with DECODE_SPLITS="16 64
#             ..." also decode at 128K keys with each key split count forced (ELA_VK_SPLITS)
#   sparse    the sparse, TSA and NSA parity tests and test_gather_lists under the carried Khronos validation layer, then
#             `ela bench sparse --backend vulkan` (validation off)
#   modelops  the model-op parity test (test_model_ops_gpu: every model op and the fixture models
#             against float64, the CPU backend and PyTorch) under the validation layer
#   fixtures  test_model's fixture checks again on vulkan:0 (ELA_TEST_BACKEND=vulkan), validation on
#   matmul    matmul timings (GEMV weight bandwidth, prefill TFLOP/s on Llama-3-8B shapes, against
#             the device's copy bandwidth in the same run: test_model_ops_gpu ELA_TEST_BENCH=1)
#   model     `ela bench model --backend vulkan` on random Qwen2.5-0.5B-shaped models
#             (tools/make_random_gguf.py, q8_0 and f16): prompt and decode tokens/s, GB/s
#   commands  each line of ELA_COMMANDS, `[VAR=value ...] ela ARGS...` with the ela just built
#             (experiments: ELA_COMMANDS=$'ELA_VK_SPLITS=8 ela bench attn --mode decode ...')
# usage: tools/vulkan_device_run.sh [STAGE...]   (default: dense sparse modelops fixtures matmul
# model)
# Output in $OUT: run.log, bench-*.json, matmul.txt, model-*.txt. Make the carried kit first with
# tools/vulkan_device_kit.sh; run with the device tool, carrying build-vks-carry:
#   run(command="bash tools/vulkan_device_run.sh modelops fixtures matmul model",
#       carry=["build-vks-carry"])
set -uo pipefail
cd "$(dirname "$0")/.."
C=$PWD/build-vks-carry
OUT=${OUT:-out/vulkan}
mkdir -p "$OUT"
LOG="$OUT/run.log"
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(dense sparse modelops fixtures matmul model)
start=$(date +%s)
say() { echo "=== $* ($(( $(date +%s) - start )) s)" | tee -a "$LOG"; }
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }
status=0

say "loader"
K=/tmp/ela-vk-kit # glslangValidator, headers, validation layer
rm -rf "$K" && mkdir -p "$K" && tar -C "$K" -xzf "$C/kit.tar.gz" || { say "no kit"; exit 1; }
# The manifest names the layer library without a path (a system search): point it at the kit.
sed -i "s|\"library_path\": \"libVkLayer|\"library_path\": \"$K/layer/libVkLayer|" \
    "$K/layer/VkLayer_khronos_validation.json"
for f in "$C"/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
ls /usr/local/nvidia/share/vulkan/icd.d/ 2>&1 | tee -a "$LOG"
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
# An ICD that loads the driver through libEGL_nvidia (the GLX one needs a display).
cat > "$K/nvidia_egl_icd.json" <<'EOF'
{"file_format_version": "1.0.1", "ICD": {"library_path": "libEGL_nvidia.so.0", "api_version": "1.3.0"}}
EOF

say "build"
B=build-vk-dev
run cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DELA_CUDA=OFF -DELA_VULKAN=ON \
    -DELA_GLSLANG="$K/bin/glslangValidator" -DELA_VULKAN_INCLUDE_DIR="$K/include" \
    || { say "configure failed"; exit 1; }
run cmake --build $B -j "$(nproc)" --target ela_cli ela-vulkan \
    test_backend_parity test_backend_parity_sparse test_backend_parity_tsa \
    test_backend_parity_nsa test_gather_lists test_model_ops_gpu test_model \
    || { say "build failed"; exit 1; }
E=$B/bin/ela

say "devices"
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json "$K/nvidia_egl_icd.json"; do
  export VK_DRIVER_FILES=$icd
  run $E info
  $E info 2>&1 | grep -q "vulkan: available" && break
done
echo "VK_DRIVER_FILES=$VK_DRIVER_FILES" | tee -a "$LOG"

stage_dense() {
  say "dense parity test (validation layer on)"
  VK_LAYER_PATH="$K/layer" ELA_TEST_VERBOSE=0 run timeout 180 $B/bin/test_backend_parity \
    || status=1
  say "bench attn (validation off): cooperative matrices, then the FMA path"
  for path in coopmat fma; do
    dis=""; [ "$path" = fma ] && dis=coopmat,decode
    for n in 8192 32768; do
      ELA_VK_VALIDATION=0 ELA_VK_DISABLE=$dis run timeout 60 $E bench attn --backend vulkan \
          --mode prefill --n $n --hq 32 --hkv 8 --d 128 --dtype f16 --iters 3 \
          --json "$OUT/bench-attn-prefill-$n-$path.json" || status=1
    done
    for n in 32768 131072; do
      ELA_VK_VALIDATION=0 ELA_VK_DISABLE=$dis run timeout 60 $E bench attn --backend vulkan \
          --mode decode --n $n --hq 32 --hkv 8 --d 128 --dtype f16 \
          --json "$OUT/bench-attn-decode-$n-$path.json" || status=1
    done
  done
  for sp in ${DECODE_SPLITS:-}; do
    ELA_VK_VALIDATION=0 ELA_VK_SPLITS=$sp run timeout 60 $E bench attn --backend vulkan \
        --mode decode --n 131072 --hq 32 --hkv 8 --d 128 --dtype f16 | tail -1 || status=1
  done
}

stage_sparse() {
  say "sparse parity test (validation layer on)"
  for t in backend_parity_sparse backend_parity_tsa backend_parity_nsa gather_lists; do
    VK_LAYER_PATH="$K/layer" ELA_TEST_VERBOSE=1 run timeout 120 $B/bin/test_$t || status=1
  done
  say "bench sparse (validation off)"
  for pol in xattn elastic:fa-xa streaming; do
    ELA_VK_VALIDATION=0 run timeout 60 $E bench sparse --backend vulkan --policy "$pol" \
        --n 8192,32768 --dtype f16 --iters 2 --json "$OUT/bench-${pol%%:*}.json" || status=1
  done
  ELA_VK_VALIDATION=0 run timeout 45 $E bench sparse --backend vulkan --mode decode \
      --policy lessismore:2048 --n 32768,131072 --dtype f16 --iters 100 \
      --json "$OUT/bench-lessismore.json" \
      || status=1
}

stage_modelops() {
  say "model-op parity test (validation layer on)"
  VK_LAYER_PATH="$K/layer" ELA_VK_VALIDATION=1 run timeout 240 $B/bin/test_model_ops_gpu \
    || status=1
}

stage_fixtures() {
  say "test_model's fixtures on vulkan:0 (validation layer on)"
  VK_LAYER_PATH="$K/layer" ELA_VK_VALIDATION=1 ELA_TEST_BACKEND=vulkan ELA_PLUGIN_PATH=$B/lib \
    run timeout 180 $B/bin/test_model || status=1
}

stage_matmul() {
  say "matmul timings (validation off)"
  ELA_VK_VALIDATION=0 ELA_TEST_BENCH=1 run timeout 240 $B/bin/test_model_ops_gpu \
    > "$OUT/matmul.txt" || status=1
}

stage_model() {
  say "ela bench model (random Qwen2.5-0.5B shape, q8_0 and f16; validation off)"
  for wt in q8_0 f16; do
    run python3 tools/make_random_gguf.py "/tmp/r-$wt.gguf" "$wt" || { status=1; continue; }
    ELA_VK_VALIDATION=0 run timeout 120 $E bench model --backend vulkan -m "/tmp/r-$wt.gguf" \
      --prompt 512 --gen 64 --json "$OUT/bench-model-$wt.json" | tee "$OUT/model-$wt.txt" \
      || status=1
  done
}

stage_commands() {
  say "ela commands from ELA_COMMANDS (one per line, validation off)"
  while IFS= read -r line; do
    [ -z "$line" ] && continue
    # shellcheck disable=SC2086 # each line is one ela command line, env assignments first
    ELA_VK_VALIDATION=0 PATH="$PWD/$B/bin:$PATH" run timeout 120 env $line || status=1
  done <<< "${ELA_COMMANDS:-}"
}

for s in "${stages[@]}"; do
  case "$s" in
    dense|sparse|modelops|fixtures|matmul|model|commands) "stage_$s" ;;
    *) say "unknown stage $s"; status=1 ;;
  esac
done
say "done (status $status)"
exit $status
