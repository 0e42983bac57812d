"""Time :func:`napari_connectome.synthetic.make_phantom` against its 10 s target.

Cases: a serial-section TEM like volume, 64 x 512 x 512 at (40, 4, 4) nm, and a
FIB-SEM like one, 64 x 256 x 256 at (8, 8, 8) nm. Each is made a few times
(different seeds) and the median wall time is reported, beside a baseline
measured in the same run: the cheapest possible "phantom" of the same shape
(Gaussian noise blurred with ``scipy.ndimage.gaussian_filter``), so the ratio
says how much the realism costs, whatever the machine's load.

Usage::

    python benchmarks/phantom.py [--repeats N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from napari_connectome.synthetic import make_phantom  # noqa: E402

TARGET_S = 10.0
CASES = (
    ("ssTEM 64x512x512 @ (40,4,4) nm", (64, 512, 512), (40.0, 4.0, 4.0)),
    ("FIB-SEM 64x256x256 @ (8,8,8) nm", (64, 256, 256), (8.0, 8.0, 8.0)),
)


def blurred_noise(shape, seed: int) -> np.ndarray:
    """Return the baseline: Gaussian noise blurred by one voxel, as uint8."""
    noise = np.random.default_rng(seed).normal(128, 40, shape).astype(np.float32)
    return np.clip(ndimage.gaussian_filter(noise, 1.0), 0, 255).astype(np.uint8)


def _median_seconds(make, repeats: int) -> tuple[float, list[float]]:
    times = []
    for seed in range(repeats):
        t0 = time.perf_counter()
        make(seed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def run(repeats: int) -> dict:
    """Time every case; return the figures as a JSON-ready dict."""
    make_phantom((8, 64, 64), (40.0, 4.0, 4.0), seed=0)  # warm imports and caches
    results = []
    for name, shape, voxel_size in CASES:
        median, times = _median_seconds(
            lambda seed, s=shape, v=voxel_size: make_phantom(s, v, seed=seed), repeats
        )
        baseline, _ = _median_seconds(lambda seed, s=shape: blurred_noise(s, seed), repeats)
        results.append(
            {
                "case": name,
                "shape": list(shape),
                "voxel_size_nm": list(voxel_size),
                "repeats": repeats,
                "median_s": round(median, 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "ratio_to_target": round(median / TARGET_S, 3),
                "baseline_blurred_noise_s": round(baseline, 3),
                "ratio_to_baseline": round(median / baseline, 2),
            }
        )
    return {
        "benchmark": "make_phantom",
        "target_s": TARGET_S,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "results": results,
    }


def main(argv=None) -> int:
    """Run the benchmark and print a markdown table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median taken)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    report = run(args.repeats)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"make_phantom, median of {args.repeats} runs, {report['cpu_count']} CPUs\n")
    print(
        "| case | median (s) | min (s) | max (s) | median / 10 s target "
        "| blurred noise baseline (s) | ratio to baseline |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in report["results"]:
        print(
            f"| {r['case']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} "
            f"| {r['ratio_to_target']:.2f} | {r['baseline_blurred_noise_s']:.2f} "
            f"| {r['ratio_to_baseline']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
