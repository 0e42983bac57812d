"""Region-graph edges that voxel splits remove and add locally.

The proofreading state keeps the region graph's edge arrays as they are
(referenced, not copied, until the first addition) with an adjacency index
(CSR: fragment -> edge rows) built once; edges added by voxel splits are
appended with their own small index, removed ones flagged dead.  So finding
the edges of a segment's fragments costs their degree, not the graph's size.

Pure numpy: no Qt, no napari, no torch.
"""

from __future__ import annotations

import numpy as np

from .region_graph import RegionGraph

__all__ = ["EDGE_FIELDS", "EdgeStore", "resized"]

EDGE_FIELDS = (
    "edges",
    "contact_area",
    "contact_weight",
    "score_sum",
    "max_score",
    "quantile_score",
)


class EdgeStore:
    """Region-graph edges that voxel splits remove and add locally.

    The initial edge arrays are referenced (copied only at the first
    addition); an adjacency index over them (CSR: fragment -> edge rows) is
    built once; added edges are appended with their own small index, removed
    ones are flagged dead.
    """

    def __init__(self, graph: RegionGraph):
        self.data = {f: np.asarray(getattr(graph, f)) for f in EDGE_FIELDS}
        self.n = len(graph.edges)
        self.alive = np.ones(self.n, dtype=bool)
        self._owned = False
        n_frag = graph.n_fragments
        ends = self.data["edges"].astype(np.int64).T.reshape(-1)  # all u, then all v
        self.ptr = np.zeros(n_frag + 2, dtype=np.int64)
        np.cumsum(np.bincount(ends, minlength=n_frag + 1), out=self.ptr[1:])
        self.rows = np.argsort(ends, kind="stable") % max(self.n, 1)
        self.n_base = n_frag
        self.extra: dict[int, list[int]] = {}

    def touching(self, ids) -> np.ndarray:
        """Sorted rows of the live edges with an end in ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        base = ids[ids <= self.n_base]
        starts = self.ptr[base]
        counts = self.ptr[base + 1] - starts
        total = int(counts.sum())
        parts = []
        if total:
            offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
            parts.append(self.rows[offsets + np.arange(total)])
        if self.extra:
            keys = np.fromiter(self.extra, dtype=np.int64, count=len(self.extra))
            parts += [
                np.asarray(self.extra[k], np.int64) for k in np.intersect1d(keys, ids).tolist()
            ]
        if not parts:
            return np.zeros(0, dtype=np.int64)
        rows = np.unique(np.concatenate(parts))
        return rows[self.alive[rows]]

    def take(self, rows) -> dict:
        """Copy the fields of some edge rows."""
        return {f: self.data[f][rows] for f in EDGE_FIELDS}

    def kill(self, rows) -> None:
        """Flag edge rows dead."""
        self.alive[rows] = False

    def add(self, fields: dict) -> None:
        """Append edges, one array per field of :data:`EDGE_FIELDS`."""
        m = len(fields["edges"])
        if m == 0:
            return
        need = self.n + m
        cap = len(self.alive)
        if not self._owned or need > cap:
            cap = max(need, 2 * cap, 16) if need > cap else cap
            for f in EDGE_FIELDS:
                old = self.data[f][: self.n]
                self.data[f] = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
                self.data[f][: self.n] = old
            alive = np.zeros(cap, dtype=bool)
            alive[: self.n] = self.alive[: self.n]
            self.alive, self._owned = alive, True
        for f in EDGE_FIELDS:
            self.data[f][self.n : need] = fields[f]
        self.alive[self.n : need] = True
        for row, (u, v) in enumerate(np.asarray(fields["edges"]).tolist(), start=self.n):
            self.extra.setdefault(u, []).append(row)
            self.extra.setdefault(v, []).append(row)
        self.n = need

    def graph(self, sizes: np.ndarray, bboxes: np.ndarray) -> RegionGraph:
        """Return the live edges as a :class:`RegionGraph`, sorted by ``(u, v)``."""
        rows = np.flatnonzero(self.alive[: self.n])
        e = self.data["edges"][rows]
        rows = rows[np.lexsort((e[:, 1], e[:, 0]))]
        arrays = {f: self.data[f][rows] for f in EDGE_FIELDS}
        return RegionGraph(**arrays, fragment_sizes=sizes, fragment_bboxes=bboxes)


def resized(a: np.ndarray, n: int) -> np.ndarray:
    """Return ``a`` with ``n`` rows: truncated, or padded with zeros."""
    out = np.zeros((n, *a.shape[1:]), dtype=a.dtype)
    m = min(n, len(a))
    out[:m] = a[:m]
    return out
