#!/bin/sh
# The README's policy table: `ela eval niah` on the shipped needle model for each prefill policy
# (decode dense) and each decode policy (prefill dense), one JSON per policy, then the table.
#   usage: tools/niah_sweep.sh [OUT_DIR] [CTX_LIST]   (default out/niah, 4096,8192,16384)
# ELA names the ela binary (default build/bin/ela); extra `ela eval niah` options go in
# NIAH_OPTS (default: --depth-steps 3); ONLY=name runs one entry (dense, prefill-xattn, ...),
# SKIP="name ..." leaves entries out (their JSON from an earlier run still joins the table).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/out/niah}
ctx=${2:-4096,8192,16384}
ela=${ELA:-$root/build/bin/ela}
model=$root/tests/data/niah-model
mkdir -p "$out"
run() { # NAME PREFILL DECODE [ela options]
    name=$1 prefill=$2 decode=$3
    shift 3
    [ -z "${ONLY:-}" ] || [ "$ONLY" = "$name" ] || return 0
    case " ${SKIP:-} " in *" $name "*) return 0 ;; esac
    echo "niah_sweep: $name (prefill $prefill, decode $decode)" >&2
    "$ela" eval niah -m "$model" --backend cpu --ctx "$ctx" ${NIAH_OPTS:---depth-steps 3} \
        --prefill-policy "$prefill" --decode-policy "$decode" --json "$out/$name.json" "$@" \
        >"$out/$name.txt"
}
run dense dense dense
run prefill-xattn xattn dense
run prefill-xattn-tau-0.95 "xattn,tau=0.95" dense
run prefill-streaming streaming dense
run prefill-tsa tsa dense
run prefill-tsa-xattn tsa+xattn dense
run prefill-tsa-profiled "tsa,layers=2-5" dense   # tools/layer_schedule.sh for this model
# Elastic Attention with the routers trained by tools/train/router.py for this model.
run prefill-elastic-fa-ssa elastic:fa-ssa dense --router "$model/router-fa-ssa.safetensors"
run prefill-elastic-fa-xa elastic:fa-xa dense --router "$model/router-fa-xa.safetensors"
run prefill-elastic-xa-ssa elastic:xa-ssa dense --router "$model/router-fa-ssa.safetensors"
run decode-lessismore-2048 dense lessismore:2048
run decode-lessismore-4096 dense lessismore:4096
run decode-lessismore-256-profiled dense "lessismore:256,select=2+7" # tools/layer_schedule.sh
run decode-lessismore-1024-profiled dense "lessismore:1024,select=2+7"
run decode-streaming dense streaming
run decode-nsa dense nsa   # without SSA's trained gate: the model was not trained for it
python3 "$root/tools/niah_table.py" "$out"/*.json
