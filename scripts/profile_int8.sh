#!/usr/bin/env bash
# Nsight Compute profiles of INT8 prefill kernel variants (issue 9: measure before changing), one text report each.
#   bash scripts/profile_int8.sh OUTDIR D:VARIANT [D:VARIANT ...]     e.g. 128:paper:128:8:3:0
# Each report: speed of light, compute-pipe use (tensor, ALU, FMA, XU), instruction mix, issue-slot use,
# warp stall reasons (and where in the SASS they fall), registers and occupancy of one warm launch at B=4, H=32,
# N=16k (SEQ overrides).
# GLUON=1: the variants are Gluon kernel launches (config:block_m:num_stages:ws:overlap[:cvt]), e.g.
#   GLUON=1 bash scripts/profile_int8.sh OUTDIR 128:paper:128:3:2:1:cvt
# TAG: a suffix for the report names (e.g. the commit), so that two builds' reports sit side by side.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
mkdir -p "$out"
seq=${SEQ:-16384}
extra=(); kind=""; [[ ${GLUON:-0} == 1 ]] && { extra=(--gluon); kind=gluon-; }
sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section InstructionStats
          --section LaunchStats --section Occupancy --section SchedulerStats --section WarpStateStats
          --section MemoryWorkloadAnalysis --section SourceCounters)
for item in "$@"; do
  d=${item%%:*}; variant=${item#*:}
  name="d${d}-${kind}${variant//:/-}${TAG:+-$TAG}"
  echo "== ncu $name"
  ncu "${sections[@]}" --print-details all -k regex:_attn_fwd --launch-skip 1 -c 1 \
      python3 scripts/profile_int8.py ${extra[@]+"${extra[@]}"} "$variant" --head-dim "$d" --seq "$seq" > "$out/$name.txt" 2>&1 \
    || ncu "${sections[@]}" -k regex:_attn_fwd --launch-skip 1 -c 1 \
      python3 scripts/profile_int8.py ${extra[@]+"${extra[@]}"} "$variant" --head-dim "$d" --seq "$seq" > "$out/$name.txt" 2>&1
  grep -E "Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|Executed Ipc Active|No Eligible" "$out/$name.txt" | head -8
done
