"""Error metrics over whole outputs, and the paper's MRE for comparison."""

from __future__ import annotations

import numpy as np


def _pair(out, ref):
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        raise ValueError(f"out: expected the shape of ref {ref.shape}, got {out.shape}")
    return out.ravel(), ref.ravel()


def relative_l2(out, ref) -> float:
    """||out - ref||_2 / ||ref||_2 over every element."""
    o, r = _pair(out, ref)
    return float(np.linalg.norm(o - r) / max(np.linalg.norm(r), np.finfo(np.float64).tiny))


def max_abs_error(out, ref) -> float:
    o, r = _pair(out, ref)
    return float(np.max(np.abs(o - r)))


def cosine_similarity(out, ref) -> float:
    o, r = _pair(out, ref)
    denom = np.linalg.norm(o) * np.linalg.norm(r)
    return float(o @ r / denom) if denom > 0 else float(np.array_equal(o, r))


def mre_paper(out, ref) -> float:
    """The paper's mean relative error as the authors' script computes it: over the last 4 elements.

    One sample of four numbers: very noisy. Reported only to compare with the paper.
    """
    o, r = _pair(out, ref)
    o, r = o[-4:], r[-4:]
    return float(np.mean(np.abs(o - r) / np.abs(r)))


def mre_all(out, ref) -> float:
    """The paper's formula mean(|out - ref| / |ref|) over every element with ref != 0.

    Heavy-tailed where ref is near zero: prefer :func:`relative_l2` for judgements.
    """
    o, r = _pair(out, ref)
    nz = r != 0
    return float(np.mean(np.abs(o[nz] - r[nz]) / np.abs(r[nz])))


def all_metrics(out, ref) -> dict:
    """Every metric above, as a dict of floats."""
    return {
        "rel_l2": relative_l2(out, ref),
        "max_abs": max_abs_error(out, ref),
        "cosine": cosine_similarity(out, ref),
        "mre_paper": mre_paper(out, ref),
        "mre_all": mre_all(out, ref),
    }
