#!/usr/bin/env bash
# The GPU half of the kernels' contract (docs/spec.md, level 2), for the device machine:
#   1. pytest -m gpu (compiled kernels vs sim: exact codes and integer products, bounded output);
#   2. compute-sanitizer memcheck over odd shapes (tails, Nq != Nk, GQA, causal, every granularity)
#      of quantize + attention, and of the decode kernel (splits, per-sequence lengths, both causal
#      alignments, paged caches with holes and invalid padding entries): masked loads and stores must never
#      touch memory out of bounds.
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
import sys
import torch
import intfa
from sim import QuantConfig

torch.manual_seed(0)
PART = sys.argv[1] if len(sys.argv) > 1 else "all"  # plain | mask | decode | all
if PART not in ("plain", "mask", "decode", "all"):
    sys.exit(f"memcheck script: unknown part {PART!r} (expected plain, mask, decode or all)")
# (batch, heads_q, heads_kv, seq_q, seq_k, head_dim, is_causal)
shapes = [(1, 2, 2, 1, 1, 64, True), (1, 2, 1, 17, 113, 64, True), (2, 3, 1, 113, 17, 128, True),
          (1, 2, 2, 339, 200, 32, False), (1, 4, 2, 65, 129, 48, True)]
configs = [QuantConfig(block_m=16, block_n=32),
           QuantConfig(q_granularity="block", k_granularity="block", v_granularity="block", block_m=32, block_n=64,
                       p_quant="signed255", p_scale="tile_max", normalizer="quantized"),
           QuantConfig(q_granularity="head", k_granularity="head", v_granularity="channel", block_m=64, block_n=32),
           QuantConfig.half_int8(block_m=32, block_n=16)]
if PART in ("all", "plain"):
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
    # The Gluon kernel (the API's default on Hopper where it runs: head dim 64 or 128, 64- or 128-key tiles, Nk a
    # multiple of 16): query and key tails past its 128-row and 128-key tiles, GQA, causal, through
    # dispatch.gluon_launch's launch (ws-overlap-cvt: a consumer partition per warpgroup, overlapped loop).
    gluon_shapes = [(1, 4, 2, 200, 144, 64, True), (2, 2, 1, 130, 272, 128, False), (1, 2, 2, 65, 400, 128, True)]
    for (b, hq, hkv, nq, nk, d, causal), cfg in itertools.product(
            gluon_shapes, [QuantConfig.paper(), QuantConfig.recommended(), QuantConfig(k_granularity="head",
                                                                                      v_granularity="channel",
                                                                                      block_n=64)]):
        q = torch.randn(b, hq, nq, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        v = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        out = intfa.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=hq != hkv, config=cfg)
        assert out.shape == q.shape and bool(torch.isfinite(out).all())
        runs += 1
    torch.cuda.synchronize()
    print(f"memcheck script: {runs} attention calls ({len(gluon_shapes) * 3} of them Gluon-sized), "
          f"{5 * (runs - len(gluon_shapes) * 3)} quantize calls done")

# attn_mask (issue 11): a padding mask broadcast over heads and queries (bool, rows with no key left), an additive
# float mask broadcast over the batch, each with causal, on shapes with tails and GQA: the mask is read through
# stride-0 dimensions and never past its last key.
if PART in ("all", "mask"):
    mask_runs = 0
    for (b, hq, hkv, nq, nk, d, causal), cfg in itertools.product(shapes[1:], configs[:2]):
        q = torch.randn(b, hq, nq, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        v = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        keep = torch.arange(nk, device="cuda")[None, None, None, :] < torch.tensor([nk, nk // 2][:b], device="cuda")[:, None, None, None]
        additive = torch.randn(1, 1, nq, nk, device="cuda").masked_fill(torch.rand(1, 1, nq, nk, device="cuda") < 0.3,
                                                                          float("-inf"))
        for mask in (keep, additive):
            out = intfa.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is keep,
                                                     enable_gqa=hq != hkv, config=cfg)
            assert out.shape == q.shape
            mask_runs += 1
    torch.cuda.synchronize()
    print(f"memcheck script: {mask_runs} attention calls with attn_mask done")

# The decode kernel (issue 10): splits (short last split, splits past the last tile, splits masked for every row),
# GQA groups packed into tiles, per-sequence lengths (0 included), both causal alignments, paged caches with
# shuffled pages, holes and padded table entries (-1 and out of range: never read), V sequence-contiguous, one and
# two key tiles in flight.
if PART in ("all", "decode"):
    decode_runs = 0
    # (batch, heads_q, heads_kv, seq_q, seq_k, head_dim, seq_lens, kv_splits)
    # The last shape's single split of 16450 keys takes two key tiles in flight (dispatch.decode_tiles_in_flight):
    # an odd count of unmasked tiles with 64-key tiles (257; 514 and 512 with 32-key tiles), a masked tail, paged.
    decode_shapes = [(1, 8, 2, 1, 1000, 128, None, 7), (3, 4, 4, 16, 517, 64, (517, 200, 0), 5),
                     (2, 16, 2, 9, 300, 96, (300, 129), 64), (2, 2, 1, 40, 130, 32, (130, 7), 3),
                     (2, 8, 2, 1, 16450, 64, (16450, 16387), 1)]
    decode_configs = [QuantConfig(block_n=64),
                      QuantConfig(q_granularity="block", k_granularity="block", v_granularity="block", block_m=16,
                                  block_n=32, p_quant="signed255", p_scale="tile_max", normalizer="quantized"),
                      QuantConfig(k_granularity="block", v_granularity="channel", block_n=32)]
    for (b, hq, hkv, nq, nk, d, lens, splits), cfg in itertools.product(decode_shapes, decode_configs):
        q = torch.randn(b, hq, nq, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        v = torch.randn(b, hkv, nk, d, device="cuda", dtype=torch.float16)
        ops = intfa.quantize_operands(q, k, v, cfg)
        seq_lens = torch.tensor(lens if lens else [nk] * b, dtype=torch.int32, device="cuda")
        for causal, align in ((False, "top_left"), (True, "top_left"), (True, "bottom_right")):
            out = intfa.attention_int8(*ops, is_causal=causal, causal_alignment=align, enable_gqa=hq != hkv, config=cfg,
                                       kv_splits=splits, seq_lens=seq_lens if lens else None, return_lse=True)[0]
            assert out.shape == q.shape and bool(torch.isfinite(out).all())
            decode_runs += 1
        # Paged: pages of 2 tiles, handed out shuffled from a pool with 3 unused pages; padding -1 and out of range.
        page = 2 * cfg.block_n
        needed = [-(-int(n) // page) for n in seq_lens.tolist()]
        pool = torch.randperm(sum(needed) + 3).tolist()
        table = torch.full((b, max(needed) + 1), -1, dtype=torch.int32)
        table[:, -1] = 10**6
        paged = {}
        for name, x in (("k", ops.k_codes), ("v", ops.v)):
            paged[name] = torch.zeros((len(pool), hkv, page, d), dtype=torch.int8, device="cuda")
        per_key = {"token": 1, "block": cfg.block_n, "block_channel": cfg.block_n}
        scales = {}
        for name, x, gran in (("k", ops.k_scale, cfg.k_granularity), ("v", ops.v_scale, cfg.v_quant_granularity)):
            scales[name] = torch.ones((len(pool), hkv, page // per_key[gran], x.shape[3]), device="cuda") \
                if gran in per_key else x
        for i, n in enumerate(needed):
            for p in range(n):
                table[i, p] = pool.pop()
                keys = slice(p * page, min((p + 1) * page, nk))
                width = keys.stop - keys.start
                paged["k"][table[i, p], :, :width] = ops.k_codes[i, :, keys]
                paged["v"][table[i, p], :, :width] = ops.v[i, :, keys]
                for name, x, gran in (("k", ops.k_scale, cfg.k_granularity), ("v", ops.v_scale, cfg.v_quant_granularity)):
                    if gran in per_key:
                        rows = slice(keys.start // per_key[gran], -(-keys.stop // per_key[gran]))
                        scales[name][table[i, p], :, : rows.stop - rows.start] = x[i, :, rows]
        v_pages = paged["v"].transpose(2, 3).contiguous().transpose(2, 3)
        out = intfa.attention_int8(ops.q_codes, paged["k"], v_pages, ops.q_scale, scales["k"], scales["v"],
                                   is_causal=True, causal_alignment="bottom_right", enable_gqa=hq != hkv, config=cfg,
                                   kv_splits=splits, seq_lens=seq_lens, block_table=table.cuda())
        assert bool(torch.isfinite(out).all())
        bad = table.clone()
        bad[0, 0] = 10**6  # unvalidated on CUDA: never followed, sequence 0 comes out NaN
        out = intfa.attention_int8(ops.q_codes, paged["k"], v_pages, ops.q_scale, scales["k"], scales["v"],
                                   enable_gqa=hq != hkv, config=cfg, kv_splits=splits, seq_lens=seq_lens,
                                   block_table=bad.cuda(), validate=False)
        assert bool(torch.isnan(out[0]).all()) or needed[0] == 0
        decode_runs += 2
    torch.cuda.synchronize()
    print(f"memcheck script: {decode_runs} decode calls done")

PY
if command -v compute-sanitizer >/dev/null; then
  # The three parts run side by side: under the sanitizer the time goes to compiling and loading the many kernel
  # variants, which one process does serially. Each part's log ends with its own ERROR SUMMARY.
  rc=0
  parts="${MEMCHECK_PARTS:-plain mask decode}"  # a subset re-runs only what changed
  pids=()
  for part in $parts; do
    compute-sanitizer --tool memcheck --error-exitcode 3 "$PYTHON" "$OUT/memcheck_shapes.py" "$part" \
      > "$OUT/memcheck-$part.log" 2>&1 &
    pids+=("$!")
  done
  for pid in "${pids[@]}"; do wait "$pid" || rc=$?; done  # each part's own status, finished early or late
  for part in $parts; do cat "$OUT/memcheck-$part.log"; done > "$OUT/memcheck.log"
  if [ "$rc" -ne 0 ] || [ "$(grep -c "ERROR SUMMARY: 0 errors" "$OUT/memcheck.log")" -ne "$(echo $parts | wc -w)" ]; then
    echo "memcheck: FAILED (exit $rc)"; status=1
  else
    echo "memcheck: 0 errors (parts: $parts)"
  fi
else
  echo "compute-sanitizer not found: memcheck skipped"; status=1
fi
exit $status
