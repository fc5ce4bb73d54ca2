#!/usr/bin/env bash
# The GPU half of the kernels' contract (docs/spec.md, level 2), for the device machine:
#   1. pytest -m gpu (compiled kernels vs sim: exact codes and integer products, bounded output);
#   2. compute-sanitizer memcheck over odd shapes (tails, Nq != Nk, GQA, causal, every granularity)
#      of quantize + attention: masked loads and stores must never touch memory out of bounds.
# Logs go under $OUT (default results/gpu_check). Usage: bash scripts/gpu_check.sh  (~3-5 minutes on an H100)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu_check}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0

"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/versions.txt"
import torch, triton, numpy
print("torch", torch.__version__, "triton", triton.__version__, "numpy", numpy.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
PY

if [ -z "${SKIP_PYTEST:-}" ]; then  # SKIP_PYTEST=1: the memcheck part alone
  "$PYTHON" -m pytest -m gpu -q -rA -s -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_gpu.log" || status=1
fi

cat > "$OUT/memcheck_shapes.py" <<'PY'
import itertools
import torch
import intfa
from sim import QuantConfig

torch.manual_seed(0)
# (batch, heads_q, heads_kv, seq_q, seq_k, head_dim, is_causal)
shapes = [(1, 2, 2, 1, 1, 64, True), (1, 2, 1, 17, 113, 64, True), (2, 3, 1, 113, 17, 128, True),
          (1, 2, 2, 339, 200, 32, False), (1, 4, 2, 65, 129, 48, True)]
configs = [QuantConfig(block_m=16, block_n=32),
           QuantConfig(q_granularity="block", k_granularity="block", v_granularity="block", block_m=32, block_n=64,
                       p_quant="signed255", p_scale="tile_max", normalizer="quantized"),
           QuantConfig(q_granularity="tensor", k_granularity="tensor", v_granularity="channel", block_m=64, block_n=32),
           QuantConfig.half_int8(block_m=32, block_n=16)]
runs = 0
for (b, hq, hkv, nq, nk, d, causal), cfg in itertools.product(shapes, configs):
    q = torch.randn(b, hq, nq, d, device="cuda", dtype=torch.float16)
    k = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
    v = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
    out = intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hkv, config=cfg)
    assert out.shape == q.shape and bool(torch.isfinite(out).all())
    for g in ("tensor", "token", "channel", "block", "block_channel"):
        intfa.quantize(k, g, block_size=16 if g.startswith("block") else None)
    runs += 1
torch.cuda.synchronize()
print(f"memcheck script: {runs} attention calls, {5 * runs} quantize calls done")
PY
if command -v compute-sanitizer >/dev/null; then
  compute-sanitizer --tool memcheck --error-exitcode 3 "$PYTHON" "$OUT/memcheck_shapes.py" 2>&1 | tee "$OUT/memcheck.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ] || ! grep -q "ERROR SUMMARY: 0 errors" "$OUT/memcheck.log"; then
    echo "memcheck: FAILED (exit $rc)"; status=1
  else
    echo "memcheck: 0 errors"
  fi
else
  echo "compute-sanitizer not found: memcheck skipped"; status=1
fi
exit $status
