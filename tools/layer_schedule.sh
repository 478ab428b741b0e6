#!/bin/sh
# Layer schedules for a model (issue 7, PAPERS.md 2.5 and 3.3), written as the policy strings
# the policies read:
#  - Token Sparse Attention's sparse layers: the low-drift half of a single-needle prompt
#    (`ela profile`), as `tsa,layers=...`;
#  - LessIsMore's selection layers: layer 2 plus the second selection layer that scores best on
#    a needle test at a small budget (the paper picks them with a 5K NIAH test at budget 256),
#    as `lessismore:K,select=2+J`.
#   usage: tools/layer_schedule.sh MODEL [OUT_JSON]   (default out/schedule.json)
# ELA names the ela binary (default build/bin/ela); CTX (default 4096) and BUDGET (default 256)
# size the selection test, PROFILE_CTX (default 8192) the drift prompt.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:?usage: tools/layer_schedule.sh MODEL [OUT_JSON]}
out=${2:-$root/out/schedule.json}
ela=${ELA:-$root/build/bin/ela}
ctx=${CTX:-4096}
budget=${BUDGET:-256}
mkdir -p "$(dirname "$out")"

profile=$("$ela" profile -m "$model" --ctx "${PROFILE_CTX:-8192}" --backend cpu)
echo "$profile" >&2
tsa=$(echo "$profile" | sed -n 's/^prefill policy: //p')
n_layers=$(echo "$profile" | awk '$2 ~ /^[0-9.]+$/ && ($3 == "sparse" || $3 == "dense")' | wc -l)

best_j=-1 best=-1
j=3
while [ "$j" -lt "$n_layers" ]; do
    acc=$("$ela" eval niah -m "$model" --backend cpu --ctx "$ctx" --tasks single,multikey \
        --decode-policy "lessismore:$budget,select=2+$j" 2>/dev/null |
        awk '$1 == "all" { split($3, a, "/"); print a[1] }')
    echo "layer_schedule: lessismore:$budget,select=2+$j: $acc correct" >&2
    if [ "${acc:-0}" -gt "$best" ]; then
        best=$acc best_j=$j
    fi
    j=$((j + 1))
done
decode="lessismore:$budget,select=2+$best_j"
[ "$best_j" -ge 0 ] || decode="lessismore:$budget"
printf '{\n  "model": "%s",\n  "prefill_policy": "%s",\n  "decode_policy": "%s"\n}\n' \
    "$model" "$tsa" "$decode" >"$out"
echo "layer_schedule: wrote $out" >&2
cat "$out"
