"""Benchmark the Review dock's next-item latency against a whole-volume redraw.

Checks the target of issue 5: the next item is shown within 100 ms of the key
press on a 256 x 1024 x 1024 volume.

The volume tiles the segmentation state of one EM phantom (as
``benchmarks/proofread.py`` does: fragments, region graph, table at 0.5).  A
real :class:`~napari_connectome._widgets.review_dock.ReviewDock` in a
``napari.Viewer(show=False)`` reviews it, with the displayed proofread labels
as a ``uint32`` Labels layer of the whole volume.

"Ours", per item: what the N key does, ``ReviewDock.next_item()`` (the queue's
next candidate, the labels of its view box, the item layer (outlines and
fix preview), the dimming, camera and z slider, the table and progress) followed by
``QApplication.processEvents()``; the item is then skipped (untimed) so every
press shows a new one.

Also timed: the W key (reject) with the next item shown at once (the answer and
the statuses file added), then with the table and progress updated (the dock
does that just after the item is on screen); and one retrain.

"Naive", per item, the same display computed over the whole volume, as a dock
would without boxes: the segment ids of every voxel (``state.labels_in`` in
16-section slabs), the mask of the segments involved ``isin(labels, segments)``
and the fix preview over the volume.

Prints Markdown tables; ``--json`` prints one JSON object with the same figures.

Usage::

    python benchmarks/review_dock.py [--shape 256 1024 1024] [--items 40] [--json] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

HERE = Path(__file__).resolve().parent
TARGET_MS = 100.0


def log(message: str) -> None:
    print(f"[review dock benchmark] {message}", file=sys.stderr, flush=True)


def _tiled_state():
    spec = importlib.util.spec_from_file_location("_bench_proofread", HERE / "proofread.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.tiled_state, module.VOXEL_SIZE


def build(shape, seed: int):
    """Return the tiled state, its review queue and the displayed labels, with timings."""
    from napari_connectome.core.proofreading import ProofreadingState
    from napari_connectome.core.review_candidates import CandidateConfig
    from napari_connectome.core.review_queue import ReviewQueue

    tiled_state, voxel = _tiled_state()
    t0 = time.perf_counter()
    fragments, boundaries, graph, table = tiled_state(tuple(shape), seed)
    state = ProofreadingState(fragments, graph, table, boundaries, voxel)
    labels = np.empty(shape, state.table.dtype)
    for z0 in range(0, shape[0], 16):
        labels[z0 : z0 + 16] = state.labels_in((slice(z0, z0 + 16),))
    t1 = time.perf_counter()
    queue = ReviewQueue(state, config=CandidateConfig(threshold=0.5))
    t2 = time.perf_counter()
    return state, queue, labels, voxel, {"state_s": t1 - t0, "queue_s": t2 - t1}


def naive_item(state, candidate) -> None:
    """Compute the item's display over the whole volume (the baseline)."""
    shape = state.fragments.shape
    labels = np.empty(shape, state.table.dtype)
    for z0 in range(0, shape[0], 16):
        labels[z0 : z0 + 16] = state.labels_in((slice(z0, z0 + 16),))
    np.isin(labels, np.asarray(candidate.segments, labels.dtype))
    candidate.preview_labels(state, tuple(slice(0, n) for n in shape))


def percentiles(times) -> dict:
    t = np.asarray(times) * 1000
    return {
        "median_ms": float(np.median(t)),
        "p95_ms": float(np.percentile(t, 95)),
        "max_ms": float(t.max()),
        "n": len(t),
    }


def run(args) -> dict:
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_connectome._widgets._review_session import ReviewSession
    from napari_connectome._widgets.review_dock import ITEM_LAYER, ReviewDock
    from napari_connectome.core.history import History

    log(f"building a {' x '.join(map(str, args.shape))} state and its queue...")
    state, queue, labels, voxel, build_times = build(args.shape, args.seed)
    log(f"{state.n_fragments} fragments, {len(queue)} candidates; timing...")
    viewer = napari.Viewer(show=False)
    layer = viewer.add_labels(labels, name="bench proofread", scale=voxel)
    dock = ReviewDock(viewer)
    tmp = Path(tempfile.mkdtemp(prefix="review-bench-"))
    session = SimpleNamespace(
        state=state,
        history=History(state),
        journal=SimpleNamespace(next_seq=0),
        store=tmp / "bench.zarr",
    )
    dock.proofread = SimpleNamespace(layer=layer, controller=SimpleNamespace(session=session))
    dock.review = ReviewSession(session, queue, path=tmp / "review.json")
    app = QApplication.instance()
    app.processEvents()
    ours, boxes = [], []
    for _ in range(args.items + 1):
        t0 = time.perf_counter()
        outcome = dock.next_item()
        app.processEvents()
        ours.append(time.perf_counter() - t0)
        c = dock.review.current
        if c is None:
            raise SystemExit(f"the queue ran out: {outcome.message}")
        boxes.append(int(viewer.layers[ITEM_LAYER].data.values.size))
        dock.review.queue.skip(c.id)  # untimed; the next press shows a new item
        dock.review.current = None
    ours = ours[1:]  # the first press creates the layers
    answers, panel = [], []  # W (reject): answer, save, next item; then table and progress
    dock.review.queue.retrain_every = 0  # retraining is timed on its own below
    dock.next_item()
    app.processEvents()
    for _ in range(args.answers):
        t0 = time.perf_counter()
        outcome = dock.reject()
        answers.append(time.perf_counter() - t0)
        app.processEvents()  # the table and progress, updated once the item is shown
        panel.append(time.perf_counter() - t0)
        if outcome.error:
            raise SystemExit(f"reject failed: {outcome.message}")
    t0 = time.perf_counter()
    dock.retrain()
    app.processEvents()
    retrain_s = time.perf_counter() - t0
    naive = []
    for _ in range(args.naive):
        c = queue.next()
        t0 = time.perf_counter()
        naive_item(state, c)
        naive.append(time.perf_counter() - t0)
        queue.skip(c.id)
    viewer.close()
    o, n, a = percentiles(ours), percentiles(naive), percentiles(answers)
    a_panel = percentiles(panel)
    return {
        "shape": list(args.shape),
        "fragments": int(state.n_fragments),
        "segments": int(len(state.segments)),
        "candidates": len(queue),
        "build": build_times,
        "ours": o,
        "naive": n,
        "answer_and_next": a,
        "answer_next_and_panel": a_panel,
        "retrain_s": retrain_s,
        "speedup_median": n["median_ms"] / o["median_ms"],
        "mean_box_voxels": float(np.mean(boxes)),
        "target_ms": TARGET_MS,
        "meets_target": o["p95_ms"] <= TARGET_MS,
        "qt_platform": os.environ.get("QT_QPA_PLATFORM", "default"),
    }


def print_tables(r: dict) -> None:
    print(
        f"Volume {' x '.join(map(str, r['shape']))}: {r['fragments']:,} fragments, "
        f"{r['segments']:,} segments, {r['candidates']:,} candidates (state built in "
        f"{r['build']['state_s']:.1f} s, queue in {r['build']['queue_s']:.1f} s; "
        f"Qt {r['qt_platform']})\n"
    )
    print("| next item | median (ms) | p95 (ms) | max (ms) | items |")
    print("|---|---|---|---|---|")
    rows = (
        ("ours: N key (box only)", "ours"),
        ("naive: whole volume", "naive"),
        ("ours: W key, answer + next item shown", "answer_and_next"),
        ("ours: W key, ... + table and progress", "answer_next_and_panel"),
    )
    for name, key in rows:
        p = r[key]
        print(
            f"| {name} | {p['median_ms']:.1f} | {p['p95_ms']:.1f} | {p['max_ms']:.1f} | {p['n']} |"
        )
    verdict = "met" if r["meets_target"] else "NOT met"
    print(
        f"\nSpeed-up (median, same run): {r['speedup_median']:.0f}x; mean view box "
        f"{r['mean_box_voxels']:,.0f} voxels. Target p95 <= {r['target_ms']:.0f} ms "
        f"(N key): {verdict}. Retrain + re-rank of the queue: {r['retrain_s']:.2f} s."
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[256, 1024, 1024])
    parser.add_argument("--items", type=int, default=40, help="items timed (ours)")
    parser.add_argument("--naive", type=int, default=3, help="items timed (naive)")
    parser.add_argument("--answers", type=int, default=20, help="answers timed (W key)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a 32 x 512 x 512 volume")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.items, args.answers = [32, 512, 512], 20, 10
    r = run(args)
    if args.json:
        print(json.dumps(r))
    else:
        print_tables(r)


if __name__ == "__main__":
    main()
