"""Benchmark proofreading latency against the full-volume approach, at two volume sizes.

Checks the targets of "Proofreading that scales":

1. merge, undo and redo under 50 ms and splits under 500 ms at the 95th
   percentile, display refresh included, on the largest volume
   (512 x 1024 x 1024 by default);
2. edit latency does not grow with the volume (median at most 1.5x from the
   smallest to the largest size), and is at least 10x faster than the naive
   full-volume approach on the largest;
3. the history of 100 edits holds under 5% of the segmentation's bytes.

Each volume tiles the segmentation state of one EM phantom (fragments,
region graph, table at 0.5; fragment ids offset per tile, region-graph edges
added across tile borders).  Fragments are ``uint32`` (the state takes any
integer dtype; ``uint64`` would need 4 GiB more at 512 x 1024 x 1024).

"Ours", per edit: ``History.do`` (or ``undo`` / ``redo``) plus the display
refresh the Proofread dock does, ``labels[bbox] = state.labels_in(bbox)`` on
the displayed ``uint32`` label volume.  Edits: merges of adjacent segments,
splits of a segment's fragment graph (seeds in two fragments), voxel splits
(both seeds in one fragment); each is undone and redone (timed), so 100 edits
stay in the history.

"Naive", the same edits on the label volume the way today's napari plugins
do it: ``labels[labels == b] = a`` for a merge; ``labels == id``, its bounding
box from a full scan, a seeded watershed in that box and a write-back for a
split (fewer repetitions).  The naive edits run first, each put back from the
state untimed, so the state and history of ours start from the tiled table.

``--napari`` also times, once, on the smallest size, the same edits inside a
real napari ``Labels`` layer of a ``napari.Viewer(show=False)``:
``layer.data[bbox] = ...; layer.refresh()`` (Qt offscreen when there is no
display; or run under ``xvfb-run -a``).

Prints Markdown tables; ``--json`` prints one JSON object instead.

Usage::

    python benchmarks/proofread.py [--sizes 128 512] [--napari] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import gc
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


def tiled_state(shape, seed: int, dtype=np.uint32):
    """Tile one phantom segmentation state to ``shape`` (a multiple of :data:`TILE`).

    Parameters
    ----------
    shape : tuple of int
        Volume shape, a multiple of :data:`TILE`.
    seed : int
        Seed of the phantom and its noise.
    dtype : numpy.dtype
        Fragment id dtype (``uint32`` halves the memory of ``uint64``).

    Returns
    -------
    tuple
        Fragments, ``uint8`` boundaries, region graph and ``uint32`` table.
    """
    reps = [s // t for s, t in zip(shape, TILE, strict=True)]
    if any(s % t for s, t in zip(shape, TILE, strict=True)):
        sys.exit(f"shape {shape} must be a multiple of {TILE}")
    phantom = make_phantom(TILE, VOXEL_SIZE, seed=seed)
    bnd = ndi.gaussian_filter(phantom.membranes.astype(np.float32), (0, 1, 1)) * 1.5
    bnd += np.random.default_rng(seed).normal(0, 0.05, bnd.shape).astype(np.float32)
    tile = segment_boundaries_state(np.clip(bnd, 0, 1).astype(np.float32), VOXEL_SIZE)
    n, g = tile.n_fragments, tile.graph
    table = tile.table_at(0.5).astype(np.uint64)
    k = int(table.max())
    count = int(np.prod(reps))
    fragments = np.empty(shape, dtype)
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


OPS = ("merge", "split", "voxel split", "undo", "redo")
EDIT_OPS = ("merge", "split", "voxel split")
SPLITS = ("split", "voxel split")
TARGET_MS = {"merge": 50.0, "undo": 50.0, "redo": 50.0, "split": 500.0, "voxel split": 500.0}
MAX_GROWTH = 1.5
MIN_SPEEDUP = 10.0
MAX_HISTORY = 0.05


def voxels_of(state, fragment, rng, count):
    """Return ``count`` random voxel positions of a fragment (None if it is smaller)."""
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)
    if len(where) < count:
        return None
    pick = rng.choice(len(where), size=count, replace=False)
    return [tuple(int(c) for c in where[i] + [s.start for s in box]) for i in pick]


def percentiles(times) -> dict:
    """Median and 95th percentile in ms of times in seconds."""
    if not len(times):
        return {"median_ms": float("nan"), "p95_ms": float("nan"), "n": 0}
    t = np.asarray(times) * 1e3
    return {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)), "n": len(t)}


def naive_merge(labels, a, b) -> None:
    """Merge ``b`` into ``a`` the full-volume way."""
    labels[labels == b] = a


def naive_split(labels, boundaries, segment, seeds, new_id) -> tuple[slice, ...]:
    """Split a segment the full-volume way; return the box it rewrote."""
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


def refresh(labels, state, box) -> None:
    """Write the changed box into the displayed labels (what the Proofread dock does)."""
    if box is not None and all(s.stop > s.start for s in box):
        labels[box] = state.labels_in(box)


def make_edit(state, edges, rng, kind):
    """Draw a random edit of a kind; return ``(edit, naive seeds)`` or None."""
    u, v = edges[rng.integers(len(edges))]
    a, b = int(state.table[u]), int(state.table[v])
    if kind == "merge":
        return None if a == b or 0 in (a, b) else (MergeEdit(a, b), None)
    if a == 0:
        return None
    frags = state.segment_fragments(a)
    if kind == "voxel split":
        pair = voxels_of(state, int(rng.choice(frags)), rng, 2)
        seeds = None if pair is None else [[pair[0]], [pair[1]]]
    elif len(frags) >= 2:
        f, g = rng.choice(frags, size=2, replace=False)
        seeds = [voxels_of(state, int(f), rng, 1), voxels_of(state, int(g), rng, 1)]
    else:
        return None
    if seeds is None or None in seeds:
        return None
    return SplitEdit(a, seeds), [grp[0] for grp in seeds]


def build(z, args):
    """Build the state, history and displayed labels of a ``z x Y x X`` volume."""
    t0 = time.perf_counter()
    shape = (z, *args.yx)
    fragments, boundaries, graph, table = tiled_state(shape, args.seed)
    state = ProofreadingState(fragments, graph, table, boundaries, VOXEL_SIZE)
    labels = np.empty(shape, state.table.dtype)  # the displayed labels
    for z0 in range(0, z, 16):  # in slabs: one take would make an intp copy of the volume
        labels[z0 : z0 + 16] = state.labels_in((slice(z0, z0 + 16),))
    return state, labels, time.perf_counter() - t0


def draw(state, edges, rng, kind):
    """Draw a random edit of a kind (retrying); see :func:`make_edit`."""
    for _ in range(1000):
        made = make_edit(state, edges, rng, kind)
        if made is not None:
            return made
    raise RuntimeError(f"found no {kind} edit")


def measure_naive(state, labels, naive_n, rng) -> dict:
    """Time edits the full-volume way on the displayed labels; the state is not changed.

    After each naive edit, the labels it changed are restored from the state
    (untimed), so the naive edits leave no trace for the timings of ours.
    """
    edges = state.graph.edges.astype(np.int64)
    naive = {op: [] for op in EDIT_OPS}
    for kind in EDIT_OPS:
        for _ in range(naive_n):
            edit, seeds = draw(state, edges, rng, kind)
            start = time.perf_counter()
            if isinstance(edit, MergeEdit):  # relabel the smaller, as ours does
                small, keep = sorted(edit.segments, key=lambda s: (state.segment_size(s), -s))
                naive_merge(labels, keep, small)
                box = state.segment_bbox(small)
            else:
                box = naive_split(labels, state.boundaries, edit.segment, seeds, 2**31)
            naive[kind].append(time.perf_counter() - start)
            refresh(labels, state, box)
    return {op: percentiles(t) for op, t in naive.items()}


def measure(state, labels, counts, rng) -> tuple[dict, History]:
    """Time edits, each undone and redone, with the display refresh, on one volume."""
    history = History(state, user="benchmark")
    edges = state.graph.edges.astype(np.int64)
    times = {op: [] for op in OPS}
    plan = [k for k, c in counts.items() for _ in range(c)]
    rng.shuffle(plan)
    for kind in plan:
        edit, _ = draw(state, edges, rng, kind)
        start = time.perf_counter()
        box = history.do(edit)
        refresh(labels, state, box)
        times[kind].append(time.perf_counter() - start)
        for op in ("undo", "redo"):
            start = time.perf_counter()
            refresh(labels, state, getattr(history, op)())
            times[op].append(time.perf_counter() - start)
    # the displayed labels must equal the state's
    for z in np.random.default_rng(1).integers(0, labels.shape[0], 4):
        box = (slice(int(z), int(z) + 1),)
        if not np.array_equal(labels[box], state.labels_in(box)):
            raise AssertionError(f"displayed labels differ from the state at z={z}")
    return {
        "ours": {op: percentiles(t) for op, t in times.items()},
        "history_edits": len(history),
        "history_bytes": int(history.nbytes),
        "segmentation_bytes": int(labels.nbytes),
        "fragments_bytes": int(state.fragments.nbytes),
    }, history


def napari_refresh(state, labels, history, counts, rng) -> dict:
    """Time edits + undo + redo with the refresh inside a real napari Labels layer."""
    if not os.environ.get("DISPLAY") and not os.environ.get("QT_QPA_PLATFORM"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import napari

    viewer = napari.Viewer(show=False)
    try:
        layer = viewer.add_labels(labels, name="segments")
        viewer.dims.set_point(0, labels.shape[0] // 2)
        edges = state.graph.edges.astype(np.int64)
        times = {op: [] for op in OPS}

        def write(box):
            if box is not None and all(s.stop > s.start for s in box):
                layer.data[box] = state.labels_in(box)
                layer.refresh()

        for kind, count in counts.items():
            for _ in range(count):
                edit, _ = draw(state, edges, rng, kind)
                start = time.perf_counter()
                write(history.do(edit))
                times[kind].append(time.perf_counter() - start)
                for op in ("undo", "redo"):
                    start = time.perf_counter()
                    write(getattr(history, op)())
                    times[op].append(time.perf_counter() - start)
        return {
            "napari": napari.__version__,
            "qt_platform": os.environ.get("QT_QPA_PLATFORM", "display"),
            "ours": {op: percentiles(t) for op, t in times.items()},
        }
    finally:
        viewer.close()


def run(args) -> dict:
    """Measure every size; return the figures and the verdicts."""
    counts = {"merge": args.merges, "split": args.splits, "voxel split": args.splits}
    sizes = {}
    napari_result = None
    for i, z in enumerate(args.sizes):
        state, labels, t_build = build(z, args)
        naive_n = args.naive_edits if i == 0 else args.naive_edits_large
        naive = measure_naive(state, labels, naive_n, np.random.default_rng(args.seed + 2))
        r, history = measure(state, labels, counts, np.random.default_rng(args.seed))
        r.update(
            naive=naive,
            shape=[z, *args.yx],
            fragments=int(state.n_fragments),
            segments=len(state._seg_frags),  # noqa: SLF001
            edges=int(len(state.graph.edges)),
            build_s=t_build,
        )
        sizes[str(z)] = r
        if args.napari and i == 0:
            napari_result = napari_refresh(
                state,
                labels,
                history,
                {k: max(1, c // 4) for k, c in counts.items()},
                np.random.default_rng(args.seed + 1),
            )
            napari_result["shape"] = r["shape"]
        del state, labels, history
        gc.collect()
    small, large = sizes[str(min(args.sizes))], sizes[str(max(args.sizes))]
    growth = {op: large["ours"][op]["median_ms"] / small["ours"][op]["median_ms"] for op in OPS}
    naive_growth = {
        op: large["naive"][op]["median_ms"] / small["naive"][op]["median_ms"] for op in EDIT_OPS
    }
    speedup = {
        op: large["naive"][op]["median_ms"] / large["ours"][op]["median_ms"] for op in EDIT_OPS
    }
    targets = {}
    for op in OPS:
        p95 = large["ours"][op]["p95_ms"]
        targets[f"{op} p95 < {TARGET_MS[op]:.0f} ms (largest)"] = bool(p95 < TARGET_MS[op])
    for op in OPS:
        targets[f"{op} growth <= {MAX_GROWTH}x"] = bool(growth[op] <= MAX_GROWTH)
    for op in EDIT_OPS:
        targets[f"{op} >= {MIN_SPEEDUP:.0f}x faster than naive (largest)"] = bool(
            speedup[op] >= MIN_SPEEDUP
        )
    for z, r in sizes.items():
        frac = r["history_bytes"] / r["segmentation_bytes"]
        targets[f"history of {r['history_edits']} edits < 5% of segmentation (z={z})"] = bool(
            frac < MAX_HISTORY
        )
    return {
        "sizes": sizes,
        "growth": growth,
        "naive_growth": naive_growth,
        "speedup_vs_naive": speedup,
        "napari": napari_result,
        "targets": targets,
        "passed": all(targets.values()),
        "cpu_count": os.cpu_count(),
    }


def _ms(p: dict) -> str:
    return f"{p['median_ms']:.2f} / {p['p95_ms']:.2f} (n={p['n']})"


def print_tables(r: dict) -> None:
    """Print the figures of :func:`run` as Markdown tables."""
    for s in r["sizes"].values():
        print(
            f"- {' x '.join(map(str, s['shape']))}: {s['fragments']} fragments, "
            f"{s['segments']} segments, {s['edges']} edges, built in {s['build_s']:.1f} s"
        )
    zs = list(r["sizes"])
    print("\nLatency, median / p95 ms, display refresh included (ours) \n")
    head = " | ".join(f"ours z={z}" for z in zs) + " | " + " | ".join(f"naive z={z}" for z in zs)
    print(f"| op | {head} | growth ours | growth naive | speed-up (largest) |")
    print("|---" + "|---:" * (2 * len(zs) + 3) + "|")
    for op in OPS:
        ours = " | ".join(_ms(r["sizes"][z]["ours"][op]) for z in zs)
        if op in EDIT_OPS:
            naive = " | ".join(_ms(r["sizes"][z]["naive"][op]) for z in zs)
            extra = f"{r['naive_growth'][op]:.1f}x | {r['speedup_vs_naive'][op]:.0f}x"
        else:
            naive = " | ".join("n/a" for _ in zs)
            extra = "n/a | n/a"
        print(f"| {op} | {ours} | {naive} | {r['growth'][op]:.2f}x | {extra} |")
    print("\n| z | edits in history | history bytes | segmentation bytes | fraction |")
    print("|---:|---:|---:|---:|---:|")
    for z, s in r["sizes"].items():
        frac = s["history_bytes"] / s["segmentation_bytes"]
        print(
            f"| {z} | {s['history_edits']} | {s['history_bytes']} | "
            f"{s['segmentation_bytes']} | {100 * frac:.4f}% |"
        )
    if r["napari"]:
        n = r["napari"]
        print(
            f"\nInside napari {n['napari']} (Labels layer, Viewer(show=False), "
            f"Qt {n['qt_platform']}), {' x '.join(map(str, n['shape']))}, "
            "`layer.data[bbox] = ...; layer.refresh()`:\n"
        )
        print("| op | median / p95 ms |")
        print("|---|---:|")
        for op in OPS:
            print(f"| {op} | {_ms(n['ours'][op])} |")
    print("\n| target | result |")
    print("|---|---|")
    for name, ok in r["targets"].items():
        print(f"| {name} | {'PASS' if ok else 'FAIL'} |")


def main(argv=None) -> None:
    """Parse arguments, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512], help="z sizes")
    parser.add_argument("--yx", type=int, nargs=2, default=[1024, 1024])
    parser.add_argument("--merges", type=int, default=40, help="merges per size")
    parser.add_argument("--splits", type=int, default=30, help="splits (and voxel splits)")
    parser.add_argument("--naive-edits", type=int, default=10, help="naive edits per kind")
    parser.add_argument(
        "--naive-edits-large", type=int, default=5, help="naive edits per kind, larger sizes"
    )
    parser.add_argument("--napari", action="store_true", help="also time a napari Labels layer")
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.yx = [16, 32], [512, 512]
        args.merges, args.splits, args.naive_edits, args.naive_edits_large = 6, 4, 3, 3
    if len(args.sizes) < 2:
        parser.error("--sizes needs two or more z sizes")
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print_tables(result)
    sys.exit(0 if result["passed"] or args.quick else 1)


if __name__ == "__main__":
    main()
