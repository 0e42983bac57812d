"""Benchmark the Proofread dock's lazy labels: how long napari waits for one plane.

A session opened lazily (``open_proofreading(..., lazy=True)``) shows a
:class:`~napari_connectome.io.lazy_labels.LazyLabels` layer: each plane napari
slices is read from the store's fragments (zarr, Blosc zstd, ``uint64``) and
looked up in the segment table.  Measured here on a fragments volume of
Voronoi cells (about 3,000 per plane, so it compresses like real fragments)
written with the store's chunking:

- ``anisotropic``: chunks ``(1, 512, 512)`` (what ``segment`` writes for EM
  sections thicker than their pixels);
- ``isotropic``: chunks ``(64, 256, 256)`` (isotropic voxels): one plane
  decompresses 64 planes of chunks.

For each: a cold plane read (a new z: zarr decompresses; with deep chunks the
whole slab of chunks is read and kept), the next plane while scrolling (deep
chunks: from the kept slab), a redraw after a merge (the kept fragment ids and
one table lookup), and the
baseline, slicing a plane of an in-memory labels array (what the in-memory dock
gives napari).  The speed figure is the ratio to that baseline, in the same run.
The dock's interactive target is a cold plane under about 50 ms.

Prints a Markdown table; ``--json`` prints one JSON object with the same figures.

Usage::

    python benchmarks/lazy_planes.py [--size 1024] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from napari_connectome.io.lazy_labels import LazyLabels  # noqa: E402
from napari_connectome.io.lazy_state import PatchedVolume  # noqa: E402
from napari_connectome.io.segmentation_store import _compressor  # noqa: E402

TARGET_MS = 50.0


def voronoi_plane(size: int, cells: int, seed: int) -> np.ndarray:
    """Return a ``size`` x ``size`` plane of Voronoi cell ids 1..cells."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), bool)
    seeds[rng.integers(0, size, cells), rng.integers(0, size, cells)] = True
    ids, n = ndi.label(seeds)
    _, (iy, ix) = ndi.distance_transform_edt(ids == 0, return_indices=True)
    return ids[iy, ix].astype(np.uint64), n


def write_fragments(path: Path, depth: int, size: int, chunks) -> tuple[object, int]:
    """Write ``depth`` planes of fragments (new ids per plane) with the store's codec."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = root.create_array(
        "fragments",
        shape=(depth, size, size),
        dtype=np.uint64,
        chunks=chunks,
        compressors=_compressor(),
        fill_value=0,
    )
    top = 0
    step = chunks[0]
    for z0 in range(0, depth, step):
        slab = []
        for z in range(z0, min(depth, z0 + step)):
            plane, n = voronoi_plane(size, 3000, z)
            slab.append(plane + np.uint64(top))
            top += n
        array[z0 : z0 + len(slab)] = np.stack(slab)
    return array, top


def best_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000.0 * min(times)


def measure(name: str, depth: int, size: int, chunks, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        array, n = write_fragments(Path(tmp) / "frags.zarr", depth, size, chunks)
        table = np.arange(n + 1, dtype=np.uint64)
        state = SimpleNamespace(fragments=PatchedVolume(array, np.uint64), table=table)
        labels = LazyLabels(state)
        in_memory = np.take(table, np.asarray(array[: min(depth, 4)]).view(np.int64))
        z = iter(range(depth))

        def cold():  # a new plane: no cache
            labels._cache.clear()  # noqa: SLF001 - the benchmark measures a miss
            labels[next(z) % depth]

        cold_ms = best_ms(cold, repeats)
        nexts = []
        for r in range(repeats):  # scrolling: the plane after one just shown
            labels._cache.clear()  # noqa: SLF001
            labels[2 * r % (depth - 1)]
            t = time.perf_counter()
            labels[2 * r % (depth - 1) + 1]
            nexts.append(1000.0 * (time.perf_counter() - t))
        next_ms = min(nexts)
        labels[1]
        redraw_ms = best_ms(lambda: labels[1], repeats)  # after a merge: cached fragments
        base_ms = best_ms(lambda: np.array(in_memory[1]), repeats)
    return {
        "volume": name,
        "shape": [depth, size, size],
        "chunks": list(chunks),
        "cold_plane_ms": round(cold_ms, 2),
        "next_plane_ms": round(next_ms, 2),
        "redraw_ms": round(redraw_ms, 2),
        "in_memory_ms": round(base_ms, 3),
        "cold_vs_in_memory": round(cold_ms / base_ms, 1),
        "redraw_vs_in_memory": round(redraw_ms / base_ms, 1),
        "under_target": cold_ms < TARGET_MS,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="plane side (pixels)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    rows = [
        measure("anisotropic", 16, args.size, (1, 512, 512), args.repeats),
        measure("isotropic", 64, args.size, (64, 256, 256), max(2, args.repeats // 2)),
    ]
    if args.json:
        print(json.dumps({"target_ms": TARGET_MS, "rows": rows}))
        return 0
    print(
        "| volume | shape | chunks | cold plane (ms) | next plane (ms) | redraw (ms) "
        f"| in memory (ms) | cold / in memory | under {TARGET_MS:.0f} ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['volume']} | {'x'.join(map(str, r['shape']))} | "
            f"{'x'.join(map(str, r['chunks']))} | {r['cold_plane_ms']} | "
            f"{r['next_plane_ms']} | {r['redraw_ms']} | {r['in_memory_ms']} | "
            f"{r['cold_vs_in_memory']}x | {r['under_target']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
