#!/usr/bin/env bash
# Everything the GPU has to say about a commit, in one device call (the device time is scarce: one start, no idle):
#   1. python -m intfa.bench --suite full            (issue 9's targets; ratios from this one run)
#   2. python -m intfa.bench --suite decode, a subset (issue 10's targets at Nk = 32k, B in 1 and 8; BENCH_DECODE_ARGS
#      overrides the subset, e.g. "--no-quantize" alone for the whole suite)
#   3. pytest -m gpu                                  (the GPU contract; Hopper launches: HOPPER_LAUNCHES, default the one
#                                                      the API routes to, ws-overlap-cvt;
#                                                      PYTEST_ARGS e.g. "-n 4": the tests are mostly compilation, which
#                                                      pytest-xdist spreads over the CPU cores)
#   4. compute-sanitizer memcheck                     (scripts/gpu_check.sh's shapes, masks included)
# Each step has its own time cap (seconds, env), so that a slow one cannot take the others' results with it. What
# comes back: $OUT/{versions.txt, bench.tgz, pytest_gpu.log, memcheck-{plain,mask,decode}.log}. Provenance: export
# INTFA_GIT_COMMIT and INTFA_GIT_DIRTY (python -m intfa.provenance prints them) before calling this; they win over
# any .git the device's copy carries (it may be another commit's).
# Measured on the H100 (2026-11-25, 4d703a2 and 35dcddf): bench full 300 s; the decode subset of 36 shapes 101 s;
# the whole decode suite (180 shapes) with BENCH_DECODE_ARGS="--no-quantize --providers sdpa-flash sdpa-cudnn
# int8-full int8-paged" 172 s (186 s with start-up) at 1d3cfff (sdpa-efficient, never the fastest on a decode shape, left out);
# pytest -m gpu with PYTEST_ARGS="-n 4" and the ws launch 212-243 s (190 tests; ~500 s without -n); memcheck's three
# parts side by side 76 s, the decode part alone 133 s on a cold Triton cache. Machine start ~60 s. Choose the
# steps of each call with STEPS (default: all four, in this order) so that each call ends inside 10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_release}"
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HOPPER_LAUNCHES="${HOPPER_LAUNCHES:-ws-overlap-cvt}"
mkdir -p "$OUT" /tmp/gpu_release/bench
STEPS="${STEPS:-bench-full bench-decode pytest-gpu memcheck}"
step() {  # step NAME CAP COMMAND...: run with a time cap (if NAME is in STEPS), say how it ended
  local name=$1 cap=$2 t0=$SECONDS; shift 2
  case " $STEPS " in *" $name "*) ;; *) echo "=== $name: skipped (not in STEPS)"; return 0;; esac
  echo "=== $name (cap ${cap}s): $*"
  timeout "$cap" "$@"; local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0))s"
}
"$PYTHON" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))" \
  | tee "$OUT/versions.txt"
echo "commit ${INTFA_GIT_COMMIT:-unknown} dirty ${INTFA_GIT_DIRTY:-unknown}" | tee -a "$OUT/versions.txt"
step bench-full "${CAP_BENCH_FULL:-200}" "$PYTHON" -m intfa.bench --suite full --out /tmp/gpu_release/bench
tar czf "$OUT/bench.tgz" -C /tmp/gpu_release bench
# shellcheck disable=SC2086
step bench-decode "${CAP_BENCH_DECODE:-90}" "$PYTHON" -m intfa.bench --suite decode --out /tmp/gpu_release/bench \
  ${BENCH_DECODE_ARGS:---seq-k 32768 --batch 1 8 --providers sdpa-flash sdpa-cudnn sdpa-efficient int8-full int8-paged}
tar czf "$OUT/bench.tgz" -C /tmp/gpu_release bench
step pytest-gpu "${CAP_PYTEST:-200}" bash -c \
  "'$PYTHON' -m pytest -m gpu -q -rfE -p no:cacheprovider --durations=15 ${PYTEST_ARGS:-} tests > '$OUT/pytest_gpu.log' 2>&1"
tail -5 "$OUT/pytest_gpu.log"
SKIP_PYTEST=1 OUT=/tmp/gpu_release/check step memcheck "${CAP_MEMCHECK:-90}" bash -c \
  "bash scripts/gpu_check.sh > /tmp/gpu_release/check.log 2>&1"
# The parts' own logs (gpu_check.sh runs them side by side): what finished before a cap is there, with its summary.
cp /tmp/gpu_release/check/memcheck-*.log "$OUT/" 2>/dev/null
grep -E "ERROR SUMMARY|memcheck script" "$OUT"/memcheck-*.log
