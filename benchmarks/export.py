"""Benchmark the export of a proofread segmentation store: time and peak memory.

Builds a segmentation store of ``--size`` on disk without running the model:
one small phantom segmentation (``TILE``, fragments, region graph and merge
tree) is translated to fill the volume, with fragment ids offset per tile so
they stay unique (the graph and merge tree follow). A proofreading journal
with merges, a split inside one fragment (voxels rewritten), a split of the
fragment graph, a lock and an undo/redo is written on a lazy state (the
volume never in memory). Then, each in a fresh subprocess, timed, with its
peak resident memory (``ru_maxrss``):

- ``streamed``: ``napari-connectome export STORE --labels DEST.ome.zarr`` (the
  journal replayed on a state whose volumes stay on disk, block by block);
- ``stored``: ``export_labels`` of the store's stored segmentation array (no
  journal: the floor any export pays for reading, pyramid and writing);
- ``whole`` (``--whole``, small sizes only): the previous implementation, the
  journal replayed on a state with the fragments and boundaries in memory.

``streamed`` and ``whole`` outputs are compared voxel by voxel when both run.
Prints a Markdown table; ``--json`` prints one JSON object with the same figures.

Usage::

    python benchmarks/export.py [--size 64x1024x1024] [--whole] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VOXEL = (40.0, 4.0, 4.0)
TILE = (32, 256, 256)
TARGETS = {"export_s_per_gvox": 60.0, "export_peak_gb": 1.0}


def log(message: str) -> None:
    print(f"[export benchmark] {message}", file=sys.stderr, flush=True)


class _Tiled:
    """A volume made of one tile translated over ``shape``, ids offset per tile."""

    def __init__(self, tile, shape, offset=0):
        self.tile, self.shape, self.offset = tile, tuple(shape), int(offset)
        self.dtype = tile.dtype
        self.ndim = 3

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        box = [range(*k.indices(n)) for k, n in zip(key, self.shape, strict=True)]
        out = np.empty([len(r) for r in box], dtype=self.dtype)
        t = self.tile.shape
        tiles_yx = [-(-n // s) for n, s in zip(self.shape[1:], t[1:], strict=True)]
        for z in range(box[0].start // t[0], -(-box[0].stop // t[0])):
            for y in range(box[1].start // t[1], -(-box[1].stop // t[1])):
                for x in range(box[2].start // t[2], -(-box[2].stop // t[2])):
                    lo = [max(b.start, i * s) for b, i, s in zip(box, (z, y, x), t, strict=True)]
                    hi = [
                        min(b.stop, (i + 1) * s) for b, i, s in zip(box, (z, y, x), t, strict=True)
                    ]
                    src = tuple(
                        slice(a - i * s, b - i * s)
                        for a, b, i, s in zip(lo, hi, (z, y, x), t, strict=True)
                    )
                    dst = tuple(
                        slice(a - b.start, c - b.start)
                        for a, c, b in zip(lo, hi, box, strict=True)
                    )
                    block = self.tile[src]
                    if self.offset:
                        k = (z * tiles_yx[0] + y) * tiles_yx[1] + x
                        block = np.where(block > 0, block + np.uint64(k * self.offset), 0)
                    out[dst] = block
        return out


def build_store(path: Path, shape: tuple) -> dict:
    """Write a tiled phantom segmentation store; return its figures."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import _phantom_segmentation
    from napari_connectome.core.agglomeration import MergeTree
    from napari_connectome.core.region_graph import RegionGraph
    from napari_connectome.io import write_segmentation_store

    start = time.perf_counter()
    res = _phantom_segmentation(TILE, seed=7)
    g, tree, n = res.graph, res.tree, int(res.graph.n_fragments)
    counts = [-(-s // t) for s, t in zip(shape, TILE, strict=True)]
    k = int(np.prod(counts))
    offs = np.arange(k, dtype=np.uint64) * np.uint64(n)
    corner = np.array(
        [
            [z * TILE[0], y * TILE[1], x * TILE[2]]
            for z in range(counts[0])
            for y in range(counts[1])
            for x in range(counts[2])
        ],
        dtype=np.int64,
    )
    edge_fields = ("contact_area", "contact_weight", "score_sum", "max_score", "quantile_score")
    box = np.concatenate([g.fragment_bboxes[1:] + np.concatenate([c, c]) for c in corner])
    box = np.minimum(box, np.array(list(shape) * 2))  # tiles cut at the volume's end
    sizes = np.concatenate([g.fragment_sizes[1:]] * k)
    # fragments cut off at the far faces: keep their (approximate) rows, they stay consistent
    graph = RegionGraph(
        edges=np.concatenate([g.edges + o for o in offs]),
        **{f: np.concatenate([getattr(g, f)] * k) for f in edge_fields},
        fragment_sizes=np.concatenate([[g.fragment_sizes[0]], sizes]),
        fragment_bboxes=np.concatenate([np.zeros((1, 6), np.int64), box]),
    )
    score = np.concatenate([tree.merge_score] * k)
    order = np.argsort(score, kind="stable")
    big = MergeTree(
        merge_a=np.concatenate([tree.merge_a + o for o in offs])[order],
        merge_b=np.concatenate([tree.merge_b + o for o in offs])[order],
        merge_score=score[order],
        merge_area=np.concatenate([tree.merge_area] * k)[order],
        n_fragments=n * k,
    )
    bnd = np.rint(np.clip(res.boundaries, 0, 1) * 255).astype(np.uint8)
    write_segmentation_store(
        path,
        boundaries=_Tiled(bnd, shape),
        fragments=_Tiled(res.fragments.astype(np.uint64), shape, offset=n),
        graph=graph,
        tree=big,
        attrs={"voxel_size": list(VOXEL), "threshold": float(res.threshold)},
    )
    return {
        "fragments": n * k,
        "edges": int(len(graph.edges)),
        "build_s": time.perf_counter() - start,
    }


def write_journal(path: Path, kind: str = "splits") -> int:
    """Proofread the store on a lazy state: merges, splits, a lock, undo and redo.

    ``kind`` "merges" leaves the splits out, "none" writes no journal.
    """
    from napari_connectome.core.edits import LockEdit, MergeEdit, SplitEdit
    from napari_connectome.core.history import History
    from napari_connectome.io.journal import Journal, journal_path
    from napari_connectome.io.lazy_state import lazy_state_from_store

    journal_path(path).unlink(missing_ok=True)
    if kind == "none":
        return 0
    state = lazy_state_from_store(path)
    history = History(state, user="benchmark")
    journal = Journal.open(journal_path(path), state, threshold=None, user="benchmark")
    journal.attach(history)

    def voxels(fragment, count):
        box = state.fragment_bbox(fragment)
        where = np.argwhere(np.asarray(state.fragments[box]) == fragment)
        pick = np.linspace(0, len(where) - 1, count).astype(int)
        return [[int(c) for c in where[i] + [s.start for s in box]] for i in pick]

    segs = [s for s in state.segments.tolist() if len(state.segment_fragments(s)) >= 2]
    history.do(MergeEdit(segs[0], segs[1]))
    history.do(MergeEdit(segs[2], segs[-1]))  # across the volume
    multi = [s for s in state.segments.tolist() if len(state.segment_fragments(s)) >= 2]
    if kind == "merges":
        history.do(MergeEdit(multi[len(multi) // 2], multi[len(multi) // 3]))
        multi = []
    s = multi[len(multi) // 2] if multi else None
    if s is not None:
        frags = state.segment_fragments(s)
        history.do(SplitEdit(s, [voxels(int(frags[0]), 1), voxels(int(frags[-1]), 1)]))
        s = multi[len(multi) // 3]
        sizes = state.graph.fragment_sizes
        big = max(state.segment_fragments(s).tolist(), key=lambda f: int(sizes[f]))
        pair = voxels(int(big), 2)
        history.do(SplitEdit(s, [[pair[0]], [pair[1]]]))  # inside one fragment: voxels cut
    history.do(LockEdit(int(state.segments[0]), True))
    history.undo()
    history.redo()
    journal.close()
    return len(history.entries)


_RUN = """
import json, resource, sys, time
mode, store, dest = sys.argv[1:4]
start = time.perf_counter()
if mode == "streamed":
    from napari_connectome.cli import main
    assert main(["export", store, "--labels", dest]) == 0
elif mode == "stored":
    from napari_connectome.io import read_segmentation_store
    from napari_connectome.io.export import export_labels
    stored = read_segmentation_store(store)
    export_labels(stored.segmentation, dest, voxel_size=stored.voxel_size)
else:
    from napari_connectome.io import read_segmentation_store
    from napari_connectome.io.export import export_labels
    from napari_connectome.io.journal import journal_path, replay, state_from_store
    stored = read_segmentation_store(store)
    state = state_from_store(stored)
    if journal_path(store).exists():
        replay(state, journal_path(store))
    export_labels(state.labels_in, dest, shape=state.fragments.shape, dtype="uint32",
                  voxel_size=stored.voxel_size)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_gb": peak / 1e9}))
"""


def run_export(mode: str, store: Path, dest: Path) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", _RUN, mode, str(store), str(dest)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def same_labels(a: Path, b: Path) -> bool:
    import zarr

    x, y = zarr.open_array(str(a / "0"), mode="r"), zarr.open_array(str(b / "0"), mode="r")
    for z in range(0, x.shape[0], 16):
        if not np.array_equal(x[z : z + 16], y[z : z + 16]):
            return False
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="64x1024x1024", help="Z x Y x X of the store")
    parser.add_argument("--whole", action="store_true", help="also run the whole-volume export")
    parser.add_argument(
        "--journal",
        choices=("splits", "merges", "none"),
        default="splits",
        help="edits to export: merges, splits, lock, undo/redo (default); no splits; none",
    )
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.size.lower().split("x"))
    if len(shape) != 3 or min(shape) < 1:
        raise SystemExit(f"--size needs Z x Y x X; got {args.size}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nc-export-"))
    work.mkdir(parents=True, exist_ok=True)
    mvox = float(np.prod(shape)) / 1e6
    store = work / "seg.zarr"
    try:
        if not store.exists():
            log(f"building a {shape} store ({mvox:.0f} Mvox) at {store}")
            built = build_store(store, shape)
        else:
            built = {"reused": True}
        built["journal"] = args.journal
        built["journal_entries"] = write_journal(store, args.journal)
        modes = ["streamed", "stored"] + (["whole"] if args.whole else [])
        runs = {}
        for mode in modes:
            log(f"export: {mode}")
            runs[mode] = run_export(mode, store, work / f"{mode}.ome.zarr")
            log(f"  {runs[mode]['seconds']:.1f} s, peak {runs[mode]['peak_gb']:.2f} GB")
        equal = None
        if args.whole:
            equal = same_labels(work / "streamed.ome.zarr", work / "whole.ome.zarr")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    for r in runs.values():
        r["mvox_per_s"] = mvox / r["seconds"]
        r["s_per_gvox"] = r["seconds"] * 1e3 / mvox
    figures = {
        "shape": list(shape),
        "mvox": mvox,
        "store": built,
        "runs": runs,
        "streamed_vs_stored_time": runs["streamed"]["seconds"] / runs["stored"]["seconds"],
        "streamed_equals_whole": equal,
        "targets": TARGETS,
    }
    if args.whole:
        figures["whole_vs_streamed_peak"] = runs["whole"]["peak_gb"] / runs["streamed"]["peak_gb"]
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"## Export benchmark: {shape} = {mvox:.0f} Mvox, voxel {VOXEL} nm\n")
    print("| export | wall s | Mvox/s | s per Gvox | peak GB |")
    print("|---|---|---|---|---|")
    for mode, r in runs.items():
        print(
            f"| {mode} | {r['seconds']:.1f} | {r['mvox_per_s']:.1f} | {r['s_per_gvox']:.0f} | "
            f"{r['peak_gb']:.2f} |"
        )
    print(
        f"\nstreamed / stored time: {figures['streamed_vs_stored_time']:.2f}x; targets: "
        f"< {TARGETS['export_s_per_gvox']:.0f} s per Gvox, < {TARGETS['export_peak_gb']} GB"
    )
    print(f"journal: {args.journal}, {built['journal_entries']} entries")
    if args.whole:
        print(
            f"whole-volume peak / streamed peak: {figures['whole_vs_streamed_peak']:.2f}x; "
            f"outputs equal: {equal}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
