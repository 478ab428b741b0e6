#!/usr/bin/env bash
# CPU benchmarks on a quiet machine with cores to spare (e.g. the GPU host through `device`):
# builds a CPU-only ela from this tree in BUILD (default /tmp/ela-cpu-pinned) and runs each
# `ela` command line given on 2 pinned cores with 2 threads, as on the 2-core CI machine but
# without other jobs' noise. Results go to stdout and, with OUT set, to $OUT/cpu_pinned.txt.
#   usage: tools/cpu_bench_pinned.sh "bench sparse --policy xattn --n 65536" ...
# environment: CORES (taskset list, default 2,3), BUILD, JOBS (nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-/tmp/ela-cpu-pinned}
CORES=${CORES:-2,3}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DELA_CUDA=OFF -DELA_VULKAN=OFF >/dev/null
cmake --build "$BUILD" -j"${JOBS:-$(nproc)}" --target ela_cli >/dev/null
log=/dev/null
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT" && log=$OUT/cpu_pinned.txt; fi
lscpu | grep -m1 "Model name" | tee -a "$log"
for cmdline in "$@"; do
  echo "+ taskset -c $CORES ela $cmdline (ELA_THREADS=2)" | tee -a "$log"
  # shellcheck disable=SC2086 # each argument is one ela command line
  ELA_THREADS=2 taskset -c "$CORES" "$BUILD/bin/ela" $cmdline 2>&1 |
    grep -v "^ela: bench sparse: n =" | tee -a "$log"
done
