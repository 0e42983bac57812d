"""Peak memory and time of ``build_region_graph``: slab-wise vs the one-shot reference.

Builds per-section fragments (as the one-click segmentation does on anisotropic
stacks) for the first 30x512x512 of the ISBI volume, from the no-model boundary
map (smoothed, inverted raw), then measures ``build_region_graph`` in a fresh
subprocess per variant: ``tracemalloc`` peak of numpy allocations during the
call, and the growth of the process's resident peak during the call (``VmHWM``
reset before the call, ``ru_maxrss`` where that is unavailable).  "before" is the
one-shot path (``region_graph._SLAB_VOXELS = 0``), "after" the default slabs.
Both results are checked to be identical field by field.

Usage::

    python benchmarks/memory_region_graph.py [--data-dir ../shared/data] [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
SHAPE = (30, 512, 512)
VOXEL = (50.0, 4.0, 4.0)
FIELDS = (
    "edges",
    "contact_area",
    "contact_weight",
    "score_sum",
    "max_score",
    "quantile_score",
    "fragment_sizes",
    "fragment_bboxes",
)


def make_inputs(data_dir: Path, out: Path) -> None:
    from scipy import ndimage as ndi

    from napari_connectome.core.fragments import make_fragments

    raw = np.load(data_dir / "isbi2012_cardona_3d.npz")["raw"]
    raw = raw[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    smooth = ndi.gaussian_filter(raw.astype(np.float32), (0, 1, 1))
    low = np.percentile(smooth, 0.5, axis=(1, 2), keepdims=True)
    high = np.percentile(smooth, 99.5, axis=(1, 2), keepdims=True)
    bnd = (1.0 - np.clip((smooth - low) / np.maximum(high - low, 1e-6), 0, 1)).astype(np.float32)
    frags = make_fragments(bnd, VOXEL)
    np.savez(out, raw=raw, boundaries=bnd, fragments=frags)


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak() -> None:
    """Reset the kernel's resident peak (Linux), so the peak covers the call only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def current_rss() -> int:
    rss = _status("VmRSS")
    return rss if rss is not None else peak_rss()


def peak_rss() -> int:
    """Resident peak since ``reset_peak`` (``VmHWM``), else ``ru_maxrss``."""
    import resource

    hwm = _status("VmHWM")
    if hwm is not None:
        return hwm
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(inputs: str, variant: str, voxel: list, result: str) -> None:
    import time
    import tracemalloc

    from napari_connectome.core import region_graph as rg

    d = np.load(inputs)
    raw, bnd, frags = d["raw"], d["boundaries"], d["fragments"]
    n = int(frags.max())
    if variant == "before":
        rg._SLAB_VOXELS = 0
    rg.build_region_graph(frags[:2], bnd[:2], voxel, n_fragments=n)  # warm-up (imports)
    reset_peak()
    base = current_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    g = rg.build_region_graph(frags, bnd, voxel, n_fragments=n)
    seconds = time.perf_counter() - t0
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = peak_rss()
    # time without tracemalloc overhead (best of 2)
    for _ in range(2):
        t0 = time.perf_counter()
        rg.build_region_graph(frags, bnd, voxel, n_fragments=n)
        seconds = min(seconds, time.perf_counter() - t0)
    np.savez(result, **{f: getattr(g, f) for f in FIELDS})
    out = {
        "variant": variant,
        "voxels": int(frags.size),
        "io_bytes": int(raw.nbytes + bnd.nbytes + frags.nbytes + 4 * frags.size),
        "n_fragments": n,
        "n_edges": g.n_edges,
        "seconds": seconds,
        "tracemalloc_peak": int(traced),
        "rss_before": int(base),
        "rss_peak": int(peak),
    }
    print(json.dumps(out))


def run_child(inputs: Path, variant: str, voxel, result: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(inputs),
        variant,
        json.dumps(voxel),
        str(result),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def identical(a: Path, b: Path) -> bool:
    x, y = np.load(a), np.load(b)
    return all(
        x[f].dtype == y[f].dtype and x[f].shape == y[f].shape and np.array_equal(x[f], y[f])
        for f in FIELDS
    )


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    res = {"shape": list(SHAPE), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs = tmp / "inputs.npz"
        make_inputs(args.data_dir, inputs)
        # ISBI voxel size (integer face areas) and one with non-integer face areas
        for voxel in (list(VOXEL), [50.0, 4.6, 4.6]):
            rows = {}
            for variant in ("before", "after"):
                rows[variant] = run_child(inputs, variant, voxel, tmp / f"{variant}.npz")
            same = identical(tmp / "before.npz", tmp / "after.npz")
            for r in rows.values():
                vox = r["voxels"]
                r.update(
                    voxel_size=voxel,
                    identical=same,
                    traced_b_per_vox=r["tracemalloc_peak"] / vox,
                    rss_growth_b_per_vox=(r["rss_peak"] - r["rss_before"]) / vox,
                    rss_peak_ratio_io=r["rss_peak"] / r["io_bytes"],
                    mvox_per_s=vox / r["seconds"] / 1e6,
                )
                res["rows"].append(r)
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"build_region_graph on {'x'.join(map(str, SHAPE))} ISBI, per-section fragments\n")
    print(
        "| voxel size | variant | s | Mvox/s | tracemalloc B/vox | RSS growth B/vox "
        "| RSS peak / (input+outputs) | identical |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(
            f"| {tuple(r['voxel_size'])} | {r['variant']} | {r['seconds']:.3f} "
            f"| {r['mvox_per_s']:.1f} | {r['traced_b_per_vox']:.1f} "
            f"| {r['rss_growth_b_per_vox']:.1f} | {r['rss_peak_ratio_io']:.2f} "
            f"| {r['identical']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
