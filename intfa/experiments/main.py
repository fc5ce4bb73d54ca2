"""The main job: every accuracy figure into ``results/``, the speed figure from the benchmark CSVs, and the
paper's claims beside ours (``results/paper/claims_vs_ours``).

NumPy, pandas and seaborn suffice: without torch and transformers the real-activation study is skipped
(said so on the output) and every synthetic study runs.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..provenance import REPO_ROOT, git_state
from ..runtime import cuda_available
from . import blocks, defects, formats, granularity, paper, peers, real, recommended, stepthrough
from .figures import Study, plt
from .harness import SIZES, Size, get_size
from .inputs import FAMILIES, real_available
from .speed import load_bench_csvs, run_bench, speed_study


def default_out_dir(size: str | Size) -> Path:
    """Where figures go: ``results/`` for the full size; ``results/<size>/`` for any other, so that a
    CI or notebook run at small size never overwrites the committed full-size figures."""
    size = get_size(size)
    return REPO_ROOT / "results" if size.name == "full" else REPO_ROOT / "results" / size.name


def notebook_out_dir(size: str | Size, *, update_results: bool = False) -> Path:
    """Where a notebook saves its figures: ``$INTFA_RESULTS_DIR`` when set (the tests' temporary folder);
    else ``results/<size>/`` below full size; at full size ``results/scratch/`` (ignored by git), so that
    exploring at full size never overwrites the committed figures, unless ``update_results`` (a notebook's
    ``INTFA_UPDATE_RESULTS=1``) asks for ``results/`` itself. Raises ValueError for ``update_results`` below
    full size: only full-size figures are committed."""
    size = get_size(size)
    if update_results and size.name != "full":
        raise ValueError(f"update_results: only a full-size run may update results/, got size {size.name!r}")
    if os.environ.get("INTFA_RESULTS_DIR"):
        return Path(os.environ["INTFA_RESULTS_DIR"])
    if size.name == "full" and not update_results:
        return REPO_ROOT / "results" / "scratch"
    return default_out_dir(size)


def accuracy_studies(size: str | Size = "small", *,
                     progress: bool = True) -> Iterator[Callable[[], Study | list[Study]]]:
    """The studies of the main job, as thunks (each runs when called), in the order they are written.

    The real-activation study is included only where :func:`real_available` (torch, transformers and the
    MiniLM weights); the studies over every family then drop "real" with a warning.
    """
    yield lambda: stepthrough.defects_per_row()
    yield lambda: blocks.block_n_study(size, FAMILIES, progress=progress)
    yield lambda: blocks.block_grid_study(size, FAMILIES, progress=progress)
    yield lambda: granularity.granularity_studies(size, FAMILIES, progress=progress)
    yield lambda: formats.formats_vs_seq_len_study(size, progress=progress)
    yield lambda: defects.causal_defect_study(size, progress=progress)
    yield lambda: defects.normalizer_bias_study(size, progress=progress)
    yield lambda: defects.tail_defect_study(size, progress=progress)
    yield lambda: recommended.recommended_study(size, FAMILIES, progress=progress)
    yield lambda: peers.peers_study(size, FAMILIES, progress=progress)
    if real_available()[0]:
        yield lambda: real.real_layer_head_study(size, progress=progress)


def run_all(size: str | Size = "small", out_dir: str | Path | None = None, *, bench: bool = False,
            progress: bool = True) -> list[Path]:
    """Run every study at ``size`` and save it under ``out_dir``; returns the files written.

    ``bench``: where CUDA is present, run ``python -m intfa.bench --suite paper`` first. The speed figure
    is drawn whenever ``results/<gpu>/bench-*.csv`` exist.
    """
    out_dir = default_out_dir(size) if out_dir is None else Path(out_dir)
    if git_state()["dirty"]:
        print("note: tracked files differ from the git commit; figures to be committed must be regenerated from a "
              "clean commit (their JSON records git.dirty = true)")
    real_ok, real_reason = real_available()
    if not real_ok:
        print(f"real_layer_head_study: skipped ({real_reason})")
    written = []
    formats_frame = None  # the paper's error figure, kept for the claim-by-claim table
    for thunk in accuracy_studies(size, progress=progress):
        start = time.perf_counter()
        result = thunk()
        for study in result if isinstance(result, list) else [result]:
            written += study.save(out_dir)
            print(f"{study.name}: {time.perf_counter() - start:.1f} s")
            print("  " + study.report().replace("\n", "\n  "), flush=True)
            plt.close(study.figure)
            if study.name == paper.FORMATS_STUDY:
                formats_frame = study.frame
    if bench and cuda_available():
        run_bench("paper")
    speed = speed_study(load_bench_csvs(REPO_ROOT / "results"))
    if speed is None:
        print("speed: no benchmark CSV under results/<gpu>/bench-*.csv yet; no speed figure")
    else:
        written += speed.save(out_dir)
        print(speed.report())
        plt.close(speed.figure)
    claims = paper.claims_study(formats_frame, None if speed is None else speed.frame)
    written += claims.save(out_dir)
    print(claims.report())
    plt.close(claims.figure)
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m intfa.experiments", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="full: the committed figures (~30 min on 2 loaded CPU cores); small: a minute or two (CI)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results directory (default: results/ for full, results/small/ for small)")
    parser.add_argument("--bench", action="store_true",
                        help="where CUDA is present, also run the benchmark (python -m intfa.bench --suite paper)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    files = run_all(args.size, args.out, bench=args.bench, progress=not args.no_progress)
    print(f"wrote {len(files)} files in {time.perf_counter() - start:.0f} s")
