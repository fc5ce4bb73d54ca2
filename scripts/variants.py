"""Named prefill-kernel variants: a configuration by name and the tl kernel's launch, as the tuning scripts take them.

    config:block_m:num_warps:num_stages:tma[:cvt]   e.g. paper:64:4:3:1, recommended:128:8:3:0, paper:64:4:3:1:cvt

``cvt``: the int32 products converted by I2F instructions instead of the magic-number add (``Launch.int_cvt``).

``config`` is a :class:`sim.QuantConfig` constructor (``paper``, ``recommended``, ...) or one of the single-option
departures below. Shared by scripts/tune_int8.py (timing), scripts/sass_histogram.py and scripts/compile_offline.py
(SASS), scripts/profile_int8.py (Nsight Compute), scripts/bench_hopper.py and scripts/compile_hopper_offline.py (the
tl kernel beside the Gluon one). Importing it needs neither torch nor a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses

#: Single-option departures from the paper's configuration, to see what each of the recommended configuration's
#: options costs.
ABLATIONS = {
    "paper+vblock": dict(v_granularity="block"),
    "paper+s255": dict(p_quant="signed255"),
    "paper+tilemax": dict(p_scale="tile_max"),
    "paper+qnorm": dict(normalizer="quantized"),
}

#: The recommended configuration with one option changed, to find a faster accurate configuration.
RECOMMENDED_VARIANTS = {
    "recommended+vchannel": dict(v_granularity="channel"),
    "recommended+vtensor": dict(v_granularity="tensor"),
    "recommended+fixedp": dict(p_scale="fixed"),
}


def named_config(name: str):
    from sim import QuantConfig

    if name in ABLATIONS:
        return QuantConfig.paper().replace(**ABLATIONS[name])
    if name in RECOMMENDED_VARIANTS:
        return QuantConfig.recommended().replace(**RECOMMENDED_VARIANTS[name])
    return getattr(QuantConfig, name)()


@dataclasses.dataclass(frozen=True)
class Variant:
    config_name: str
    block_m: int
    num_warps: int
    num_stages: int
    use_tma: int
    int_cvt: bool = False

    @classmethod
    def parse(cls, spec: str) -> "Variant":
        try:
            name, bm, warps, stages, tma, *rest = spec.split(":")
            if rest not in ([], ["cvt"]):
                raise ValueError(spec)
            return cls(name, int(bm), int(warps), int(stages), int(tma), bool(rest))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"variant {spec!r}: expected config:block_m:warps:stages:tma[:cvt]") \
                from exc

    @property
    def config(self):
        return named_config(self.config_name)

    @property
    def launch(self):
        from intfa.kernels import Launch

        return Launch(self.block_m, self.num_warps, self.num_stages, bool(self.use_tma), int_cvt=self.int_cvt)

    def __str__(self) -> str:
        cvt = ":cvt" if self.int_cvt else ""
        return f"{self.config_name}:{self.block_m}:{self.num_warps}:{self.num_stages}:{self.use_tma}{cvt}"


def run_variant(variant: Variant, q, k, v, *, causal: bool):
    """A zero-argument callable running the prefill kernel of ``variant`` on operands quantized once here."""
    import intfa
    from intfa.kernels import attention_forward

    cfg = variant.config
    ops = intfa.quantize_operands(q, k, v, cfg)
    scale = q.shape[-1] ** -0.5

    def run():
        return attention_forward(*ops, config=cfg, scale=scale, is_causal=causal, out_dtype=q.dtype,
                                 launch=variant.launch)

    return run
