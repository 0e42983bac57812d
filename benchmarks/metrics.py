"""Benchmark segmentation metrics against scikit-image on a large volume.

Builds a ``size**3`` ground truth (Voronoi cells of random seeds, uint32, cell
borders set to 0 like membranes) and an imperfect segmentation of it (the
Voronoi cells of jittered seeds, some cells merged, uint64), then times
``napari_connectome.core.metrics.evaluate_segmentation`` against the
scikit-image baseline (``variation_of_information`` plus
``adapted_rand_error``, each building its own table) on the same input, in the
same run. Each time is the median of ``--repeats`` runs.

Run ``python benchmarks/metrics.py`` for a markdown table, ``--json`` for one
JSON object with the same figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from scipy import ndimage as ndi
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_connectome.core.metrics import evaluate_segmentation


def voronoi(shape, seeds: np.ndarray) -> np.ndarray:
    """Label every voxel with 1 + the index of its nearest seed (uint32)."""
    labels = np.zeros(shape, dtype=np.uint32)
    labels[tuple(seeds.T)] = np.arange(1, len(seeds) + 1, dtype=np.uint32)
    indices = ndi.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return labels[tuple(indices)]


def make_volumes(size: int, n_seeds: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (size,) * 3
    seeds = rng.integers(0, size, size=(n_seeds, 3))
    truth = voronoi(shape, seeds)
    truth[:, :, 1:][truth[:, :, 1:] != truth[:, :, :-1]] = 0  # thin "membranes"
    jittered = np.clip(seeds + rng.integers(-4, 5, size=seeds.shape), 0, size - 1)
    cells = voronoi(shape, jittered)
    # Merge 5 % of the cells into a neighbour id; sparse uint64 ids (scikit-image
    # allocates tables of max(id) + 1 rows, so keep the ids moderate for it).
    mapping = np.arange(n_seeds + 1, dtype=np.uint64) * np.uint64(7) + np.uint64(3)
    merged = rng.choice(np.arange(1, n_seeds + 1), size=n_seeds // 20, replace=False)
    mapping[merged] = mapping[np.maximum(merged - 1, 1)]
    return truth, mapping[cells]


def skimage_scores(segmentation, truth):
    split, merge = variation_of_information(truth, segmentation, ignore_labels=[0])
    error, _, _ = adapted_rand_error(truth, segmentation, ignore_labels=(0,))
    return float(split), float(merge), float(error)


def median_time(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run(size: int, n_seeds: int, repeats: int) -> dict:
    start = time.perf_counter()
    truth, segmentation = make_volumes(size, n_seeds)
    setup_s = time.perf_counter() - start
    # Random 64-bit ids (no compact range, too wide for scikit-image's dense
    # tables): exercises the ranking path.
    ids, inverse = np.unique(segmentation, return_inverse=True)
    random_ids = np.random.default_rng(1).integers(1, 2**63, size=len(ids), dtype=np.uint64)
    scrambled = random_ids[inverse.reshape(segmentation.shape)]

    t_skimage, (sk_split, sk_merge, _) = median_time(
        lambda: skimage_scores(segmentation, truth), repeats
    )
    t_ours, scores = median_time(lambda: evaluate_segmentation(segmentation, truth), repeats)
    t_scrambled, scores_scrambled = median_time(
        lambda: evaluate_segmentation(scrambled, truth), repeats
    )
    voi_diff = max(abs(scores["voi_split"] - sk_split), abs(scores["voi_merge"] - sk_merge))
    rows = [
        ("skimage variation_of_information + adapted_rand_error (baseline)", t_skimage),
        ("napari_connectome evaluate_segmentation", t_ours),
        ("napari_connectome evaluate_segmentation, random 64-bit ids", t_scrambled),
    ]
    return {
        "shape": list(truth.shape),
        "dtypes": {"ground_truth": str(truth.dtype), "segmentation": str(segmentation.dtype)},
        "n_voxels_counted": scores["n_voxels"],
        "n_segments": scores["n_segments"],
        "n_ground_truth": scores["n_ground_truth"],
        "repeats": repeats,
        "setup_seconds": round(setup_s, 2),
        "methods": [
            {"method": name, "seconds": seconds, "ratio_to_skimage": seconds / t_skimage}
            for name, seconds in rows
        ],
        "voi_max_abs_diff_vs_skimage": voi_diff,
        "random_ids_same_scores": all(
            abs(scores_scrambled[key] - value) < 1e-12 for key, value in scores.items()
        ),
        "scores": scores,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=250, help="edge of the cubic volume")
    parser.add_argument("--seeds", type=int, default=2000, help="number of Voronoi cells")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args.size, args.seeds, args.repeats)
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"Volume {'x'.join(map(str, result['shape']))}, {result['n_voxels_counted']:,} voxels "
        f"counted, {result['n_segments']} segments, {result['n_ground_truth']} truth objects; "
        f"median of {result['repeats']} runs.\n"
    )
    print("| method | seconds | ratio to skimage |")
    print("|---|---:|---:|")
    for row in result["methods"]:
        print(f"| {row['method']} | {row['seconds']:.3f} | {row['ratio_to_skimage']:.3f} |")
    print(
        f"\nVOI max |difference| vs skimage: {result['voi_max_abs_diff_vs_skimage']:.2e}; "
        f"random 64-bit ids give the same scores: {result['random_ids_same_scores']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
