#!/usr/bin/env bash
# Vulkan backend on the GPU machine in one call: Vulkan loader from the carried .debs, the
# NVIDIA ICD, build (Release, Vulkan plugin, carried glslangValidator and headers), the `vulkan`
# tests under the carried Khronos validation layer, then `ela bench sparse --backend vulkan`
# (validation off). Output in $OUT: run.log and bench-*.json. Make the carried kit first with
# tools/vulkan_device_kit.sh; run with the device tool, carrying build-vks-carry.
set -uo pipefail
cd "$(dirname "$0")/.."
C=$PWD/build-vks-carry
OUT=${OUT:-out/vulkan}
mkdir -p "$OUT"
LOG="$OUT/run.log"
start=$(date +%s)
say() { echo "=== $* ($(( $(date +%s) - start )) s)" | tee -a "$LOG"; }
run() { echo "+ $*" | tee -a "$LOG"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

say "loader"
for f in "$C"/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
ls /usr/local/nvidia/share/vulkan/icd.d/ 2>&1 | tee -a "$LOG"
export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
# An ICD that loads the driver through libEGL_nvidia (the GLX one needs a display).
cat > "$C/nvidia_egl_icd.json" <<'EOF'
{"file_format_version": "1.0.1", "ICD": {"library_path": "libEGL_nvidia.so.0", "api_version": "1.3.0"}}
EOF

say "build"
B=build-vk-dev
run cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DELA_CUDA=OFF -DELA_VULKAN=ON \
    -DELA_GLSLANG="$C/bin/glslangValidator" -DELA_VULKAN_INCLUDE_DIR="$C/include" \
    || { say "configure failed"; exit 1; }
run cmake --build $B -j "$(nproc)" --target ela_cli ela-vulkan \
    test_backend_parity_sparse || { say "build failed"; exit 1; }

say "devices"
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json "$C/nvidia_egl_icd.json"; do
  export VK_DRIVER_FILES=$icd
  run $B/bin/ela info
  $B/bin/ela info 2>&1 | grep -q "vulkan: available" && break
done
echo "VK_DRIVER_FILES=$VK_DRIVER_FILES" | tee -a "$LOG"

say "sparse parity test (validation layer on)"
export VK_LAYER_PATH="$C/layer"
ELA_TEST_VERBOSE=1 run timeout 120 $B/bin/test_backend_parity_sparse
unset VK_LAYER_PATH

say "bench sparse (validation off)"
export ELA_VK_VALIDATION=0
E=$B/bin/ela
for pol in xattn elastic:fa-xa streaming; do
  run timeout 60 $E bench sparse --backend vulkan --policy "$pol" --n 8192,32768 --iters 2 \
      --json "$OUT/bench-${pol%%:*}.json"
done
run timeout 45 $E bench sparse --backend vulkan --mode decode --policy lessismore:2048 \
    --n 32768,131072 --iters 5 --json "$OUT/bench-lessismore.json"
say "done"
