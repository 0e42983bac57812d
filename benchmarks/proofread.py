"""Benchmark proofreading edits on a large volume against the full-volume approach.

Builds a large fragment volume by tiling the segmentation state of an EM
phantom (fragments, region graph, table at 0.5; ids offset per tile, no edges
across tiles), then times, on the same machine in the same run:

- ours: ``History.do(edit)`` plus ``state.labels_in(changed box)`` (what a view
  refreshes) for merges of adjacent segments, splits of a segment's fragment
  graph (seeds in two fragments) and voxel splits (both seeds in one fragment);
- the naive baseline of today's napari plugins on a materialised label
  volume: ``labels[labels == b] = a`` for a merge; ``labels == id``, its
  bounding box from a full scan, a seeded watershed in that box and a write
  back for a split.

Also reports the bytes an undo entry holds against a full copy of the label
volume and against napari-style per-voxel undo (index + old + new per changed
voxel).  Prints a Markdown table; ``--json`` prints one JSON object instead.

Usage::

    python benchmarks/proofread.py [--shape 128 1024 1024] [--edits 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy import ndimage as ndi

from napari_connectome.core.proofreading import History, MergeEdit, ProofreadingState, SplitEdit
from napari_connectome.core.region_graph import RegionGraph
from napari_connectome.segmentation import segment_boundaries_state
from napari_connectome.synthetic import make_phantom

VOXEL_SIZE = (40.0, 4.0, 4.0)
TILE = (8, 256, 256)
FIELDS = ("edges", "contact_area", "contact_weight", "score_sum", "max_score", "quantile_score")


def tiled_state(shape, seed: int):
    """Tile one phantom segmentation state to ``shape`` (a multiple of :data:`TILE`)."""
    reps = [s // t for s, t in zip(shape, TILE, strict=True)]
    if any(s % t for s, t in zip(shape, TILE, strict=True)):
        sys.exit(f"--shape must be a multiple of {TILE}")
    phantom = make_phantom(TILE, VOXEL_SIZE, seed=seed)
    bnd = ndi.gaussian_filter(phantom.membranes.astype(np.float32), (0, 1, 1)) * 1.5
    bnd += np.random.default_rng(seed).normal(0, 0.05, bnd.shape).astype(np.float32)
    tile = segment_boundaries_state(np.clip(bnd, 0, 1).astype(np.float32), VOXEL_SIZE)
    n, g = tile.n_fragments, tile.graph
    table = tile.table_at(0.5).astype(np.uint64)
    k = int(table.max())
    count = int(np.prod(reps))
    fragments = np.empty(shape, np.uint64)
    boundaries = np.empty(shape, np.uint8)
    bnd8 = np.rint(tile.boundaries * 255).astype(np.uint8)
    edges, bboxes, sizes, tables = [], [np.zeros((1, 6), np.int64)], [g.fragment_sizes[:1]], [[0]]
    for i, origin in enumerate(np.ndindex(*reps)):
        start = np.array(origin) * TILE
        box = tuple(slice(a, a + t) for a, t in zip(start, TILE, strict=True))
        fragments[box] = np.where(tile.fragments > 0, tile.fragments + np.uint64(i * n), 0)
        boundaries[box] = bnd8
        edges.append(g.edges + np.uint64(i * n))
        bboxes.append(g.fragment_bboxes[1:] + np.concatenate([start, start]))
        sizes.append(g.fragment_sizes[1:])
        tables.append(np.where(table[1:] > 0, table[1:] + i * k, 0))
    inner = {"edges": np.concatenate(edges)}
    inner.update({f: np.tile(getattr(g, f), count) for f in FIELDS[1:]})
    cross = cross_tile_edges(fragments, boundaries, reps, n * count)
    order = np.lexsort(np.concatenate([inner["edges"], cross["edges"]]).T[::-1])
    graph = RegionGraph(
        **{f: np.concatenate([inner[f], cross[f]])[order] for f in FIELDS},
        fragment_sizes=np.concatenate(sizes),
        fragment_bboxes=np.concatenate(bboxes),
    )
    return fragments, boundaries, graph, np.concatenate(tables).astype(np.uint32)


def cross_tile_edges(fragments, boundaries, reps, n):
    """Region-graph edges between fragments facing each other across tile borders."""
    keys, scores = [], []
    for axis in range(3):
        for k in range(1, reps[axis]):
            c = k * TILE[axis]
            a, b = fragments.take(c - 1, axis).ravel(), fragments.take(c, axis).ravel()
            q = boundaries.take(c - 1, axis).astype(np.int64) + boundaries.take(c, axis)
            sel = (a != b) & (a > 0) & (b > 0)
            u, v = np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])
            keys.append((u * np.uint64(n + 1) + v) * np.uint64(3) + np.uint64(axis))
            scores.append(q.ravel()[sel])
    keys, scores = np.concatenate(keys), np.concatenate(scores)
    pairs, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    area = np.prod(VOXEL_SIZE) / np.asarray(VOXEL_SIZE)[(pairs % 3).astype(np.int64)]
    q = np.bincount(inverse, weights=scores) / 510.0
    qmax = np.zeros(len(pairs))
    np.maximum.at(qmax, inverse, scores / 510.0)
    pair = pairs // np.uint64(3)
    return {
        "edges": np.stack([pair // np.uint64(n + 1), pair % np.uint64(n + 1)], axis=1),
        "contact_area": counts.astype(np.int64),
        "contact_weight": counts * area,
        "score_sum": q * area,
        "max_score": qmax.astype(np.float32),
        "quantile_score": qmax.astype(np.float32),
    }


def grow_big_segment(graph, table, target, rng):
    """Relabel a connected set of segments (``target`` fragments or more) as one segment."""
    seg_u = table[graph.edges[:, 0].astype(np.int64)].astype(np.int64)
    seg_v = table[graph.edges[:, 1].astype(np.int64)].astype(np.int64)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order

    m = int(table.max()) + 1
    adjacency = coo_matrix((np.ones(len(seg_u)), (seg_u, seg_v)), shape=(m, m)).tocsr()
    start = int(table[rng.integers(1, len(table))])
    order = breadth_first_order(adjacency, start, directed=False, return_predecessors=False)
    per_segment = np.bincount(table.astype(np.int64), minlength=m)
    take = order[: int(np.searchsorted(np.cumsum(per_segment[order]), target)) + 1]
    table = table.copy()
    table[np.isin(table, take)] = start
    return table, start


def voxels_of(state, fragment, rng, count):
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)
    if len(where) < count:
        return None
    pick = rng.choice(len(where), size=count, replace=False)
    return [tuple(int(c) for c in where[i] + [s.start for s in box]) for i in pick]


def percentiles(times):
    t = np.asarray(times) * 1e3
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)), "n": len(t)}


def naive_merge(labels, a, b):
    labels[labels == b] = a


def naive_split(labels, boundaries, segment, seeds, new_id):
    from skimage.segmentation import watershed

    mask = labels == segment
    nz = [np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != i))) for i in range(3)]
    box = tuple(slice(int(z[0]), int(z[-1]) + 1) for z in nz)
    markers = np.zeros(mask[box].shape, np.int32)
    for g, p in enumerate(seeds):
        local = tuple(
            min(max(c - s.start, 0), s.stop - s.start - 1) for c, s in zip(p, box, strict=True)
        )
        markers[local] = g + 1
    ws = watershed(boundaries[box], markers, mask=mask[box])
    labels[box][ws == 2] = new_id
    return box


def run(args) -> dict:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    fragments, boundaries, graph, table = tiled_state(tuple(args.shape), args.seed)
    table, big = grow_big_segment(graph, table, args.big, rng)
    t_build_volume = time.perf_counter() - t0
    t0 = time.perf_counter()
    state = ProofreadingState(fragments, graph, table, boundaries, VOXEL_SIZE)
    t_state = time.perf_counter() - t0
    big_fragments, big_box = len(state.segment_fragments(big)), state.segment_bbox(big)
    history = History(state, user="benchmark")
    edges = graph.edges.astype(np.int64)
    rows = {}

    def random_segment():
        return int(state.table[edges[rng.integers(len(edges)), 0]])

    def merge_edit(into_big):
        u, v = edges[rng.integers(len(edges))]
        a, b = int(state.table[u]), int(state.table[v])
        if into_big:  # a neighbour of the big segment (edges found via its fragments)
            frags = state.segment_fragments(big).astype(np.int64)
            mask = np.isin(edges[:, 0], frags) & ~np.isin(edges[:, 1], frags)
            if not mask.any():
                return None
            a, b = big, int(state.table[edges[rng.choice(np.flatnonzero(mask)), 1]])
        return None if a == b else ((a, b), MergeEdit(a, b))

    def split_edit(segment, voxel):
        frags = state.segment_fragments(segment)
        if voxel:
            pair = voxels_of(state, int(rng.choice(frags)), rng, 2)
            seeds = None if pair is None else [[pair[0]], [pair[1]]]
        elif len(frags) >= 2:
            f, g = rng.choice(frags, size=2, replace=False)
            seeds = [voxels_of(state, int(f), rng, 1), voxels_of(state, int(g), rng, 1)]
        else:
            return None
        if seeds is None or None in seeds:
            return None
        return (segment, [grp[0] for grp in seeds]), SplitEdit(segment, seeds)

    scenarios = {
        "merge": (lambda: merge_edit(False), False),
        "merge into big": (lambda: merge_edit(True), False),
        "split": (lambda: split_edit(random_segment(), False), False),
        "voxel split": (lambda: split_edit(random_segment(), True), False),
        "split big": (lambda: split_edit(big, False), True),
    }
    labels = state.segmentation()  # the naive baseline's label volume, kept in step
    next_id = 2**31

    def sync(*boxes):
        for box in boxes:
            if box is not None and all(sl.stop > sl.start for sl in box):
                labels[box] = state.labels_in(box)

    for name, (make, undo_after) in scenarios.items():
        times, naive, nbytes, changed = [], [], [], []
        for _ in range(100 * args.edits):
            if len(times) >= args.edits:
                break
            made = make()
            if made is None:
                continue
            params, edit = made
            naive_box = None
            if len(naive) < args.naive_edits:  # the same edit, the full-volume way
                start = time.perf_counter()
                if isinstance(edit, MergeEdit):  # relabel the smaller, as ours does
                    small, keep = sorted(edit.segments, key=lambda s: (state.segment_size(s), -s))
                    naive_merge(labels, keep, small)
                else:
                    naive_box = naive_split(labels, boundaries, params[0], params[1], next_id)
                    next_id += 1
                naive.append(time.perf_counter() - start)
            before = state.next_segment_id
            if isinstance(edit, MergeEdit):
                relabelled = min(state.segment_size(s) for s in edit.segments)
            start = time.perf_counter()
            box = history.do(edit)
            state.labels_in(box)  # what the view refreshes
            times.append(time.perf_counter() - start)
            nbytes.append(edit.nbytes)
            if isinstance(edit, SplitEdit):
                new = [i for i in edit.result["segments"] if i >= before]
                relabelled = sum(state.segment_size(i) for i in new)
            changed.append(relabelled)
            sync(box, naive_box)
            if undo_after:
                sync(history.undo())
        rows[name] = {
            "ours": percentiles(times),
            "naive": percentiles(naive),
            "undo_bytes_mean": float(np.mean(nbytes)),
            "changed_voxels_mean": float(np.mean(changed)),
            # napari-style undo: (z, y, x) index + old + new per changed voxel
            "naive_voxel_undo_bytes_mean": float(np.mean(changed)) * (24 + 2 * labels.itemsize),
        }

    undo_times = []
    for _ in range(min(args.edits, len(history))):
        start = time.perf_counter()
        state.labels_in(history.undo())
        undo_times.append(time.perf_counter() - start)
    return {
        "shape": list(args.shape),
        "voxels": int(np.prod(args.shape)),
        "fragments": int(state.n_fragments),
        "segments": int(len(state.segments)),
        "edges": int(len(edges)),
        "big_segment": {"fragments": big_fragments, "bbox": [[s.start, s.stop] for s in big_box]},
        "build_volume_s": t_build_volume,
        "state_index_s": t_state,
        "edits": rows,
        "undo": percentiles(undo_times),
        "full_copy_bytes": int(labels.nbytes),
        "cpu_count": os.cpu_count(),
    }


def print_table(r: dict) -> None:
    mvox = r["voxels"] / 1e6
    print(
        f"Volume {' x '.join(map(str, r['shape']))} ({mvox:.0f} Mvoxels), "
        f"{r['fragments']} fragments, {r['segments']} segments, {r['edges']} edges; "
        f"state index built in {r['state_index_s']:.2f} s; big segment: "
        f"{r['big_segment']['fragments']} fragments, box {r['big_segment']['bbox']}\n"
    )
    print(
        "| edit | ours median ms | ours p95 ms | naive median ms | naive p95 ms | speed-up "
        "| undo entry bytes | full copy bytes | per-voxel undo bytes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, row in r["edits"].items():
        o, n = row["ours"], row["naive"]
        print(
            f"| {kind} (n={o['n']}, naive n={n['n']}) | {o['median_ms']:.2f} | {o['p95_ms']:.2f} "
            f"| {n['median_ms']:.1f} | {n['p95_ms']:.1f} | {n['median_ms'] / o['median_ms']:.0f}x "
            f"| {row['undo_bytes_mean']:.0f} | {r['full_copy_bytes']} "
            f"| {row['naive_voxel_undo_bytes_mean']:.0f} |"
        )
    u = r["undo"]
    print(f"\nUndo (n={u['n']}): median {u['median_ms']:.2f} ms, p95 {u['p95_ms']:.2f} ms.")
    print("Ours includes the table lookup of the changed box (the view refresh).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512])
    parser.add_argument("--edits", type=int, default=50, help="edits of each kind (ours)")
    parser.add_argument("--naive-edits", type=int, default=10, help="edits of each kind (naive)")
    parser.add_argument("--big", type=int, default=2000, help="fragments of the big segment")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


if __name__ == "__main__":
    main()
