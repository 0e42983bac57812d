"""The editable segmentation state that proofreading changes, locally.

The state is the fragments volume, the region graph of the fragments and the
fragment-to-segment table, as in Paintera's fragment-segment assignment or
the CAVE supervoxel graph: what the user sees is ``table[fragments]``.

- A merge changes table entries only; no voxel is rewritten.
- A split cuts the segment's fragment graph between seed groups.  Only where
  two seed groups fall in the same fragment are voxels rewritten: that
  fragment is cut by a seeded watershed inside its bounding box and the new
  pieces get new fragment ids.
- Per-segment bounding boxes, voxel counts and fragment lists are kept up to
  date by every edit, so no interactive path scans the whole volume.

A merge keeps the id of the largest segment (the smaller ones' fragments are
relabelled, so the changed box is theirs); a split keeps the id for its
largest part.  Edits are action objects (:mod:`~napari_connectome.core.edits`),
undo and redo live in :mod:`~napari_connectome.core.history`, split planning
in :mod:`~napari_connectome.core.splitting` and the locally editable graph
edges in :mod:`~napari_connectome.core.edge_store`; this module re-exports the
public names.  Segment ids are never reused: each new segment gets the next
free id, which never decreases (undo included).  Fragment ids made by a voxel
split are released again when that split is undone.

Pure numpy/scipy/scikit-image: no Qt, no napari, no torch.

Examples
--------
>>> state = ProofreadingState.from_result(result, 0.5)  # doctest: +SKIP
>>> history = History(state)  # doctest: +SKIP
>>> box = history.merge(12, 40)  # refresh labels_in(box) in the view  # doctest: +SKIP
>>> box = history.split(7, [[(3, 40, 52)], [(3, 90, 17)]])  # doctest: +SKIP
>>> history.undo()  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .edge_store import EdgeStore, resized
from .edits import (
    Change,
    ChangeEdit,
    Edit,
    FragmentPatch,
    LockEdit,
    LockedSegmentError,
    MergeEdit,
    SplitEdit,
    TableChange,
    edit_from_dict,
)
from .history import History, HistoryEntry
from .region_graph import RegionGraph
from .splitting import SplitPreview, plan_split

__all__ = [
    "Change",
    "ChangeEdit",
    "Edit",
    "FragmentPatch",
    "History",
    "HistoryEntry",
    "LockEdit",
    "LockedSegmentError",
    "MergeEdit",
    "ProofreadingState",
    "SplitEdit",
    "SplitPreview",
    "TableChange",
    "edit_from_dict",
]


def _slices(start, stop) -> tuple[slice, ...]:
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))


class ProofreadingState:
    """Fragments, region graph and fragment-to-segment table, editable locally.

    Parameters
    ----------
    fragments : numpy.ndarray
        Integer fragment ids (``uint64``), 2D or 3D; held by reference and
        changed in place only by voxel splits, inside the cut fragment's box.
    graph : RegionGraph
        Region graph of the fragments (not modified; see :attr:`graph`).
    table : numpy.ndarray
        ``(N + 1,)`` fragment-to-segment table with ``table[0] == 0`` (copied).
    boundaries : numpy.ndarray, optional
        Boundary probabilities (float in [0, 1], or ``uint8`` as value / 255),
        the volume's shape: the watershed image of voxel splits and the scores
        of the region-graph edges they create (0 without it).
    voxel_size : sequence of float, optional
        Voxel size in nm, as the graph was built with (edge weights of new
        fragments are then physical areas too).
    """

    def __init__(self, fragments, graph: RegionGraph, table, boundaries=None, voxel_size=None):
        if not isinstance(fragments, np.ndarray):
            raise TypeError("fragments must be a numpy array (voxel splits edit it in place)")
        if fragments.ndim not in (2, 3) or fragments.dtype.kind not in "ui":
            raise ValueError(f"fragments must be 2D or 3D integer ids; got {fragments.dtype}")
        nd = fragments.ndim
        n = graph.n_fragments
        table = np.asarray(table)
        if table.shape != (n + 1,) or table.dtype.kind not in "ui":
            raise ValueError(
                f"table must be {n + 1} integer entries (the graph has {n} fragments)"
            )
        if table[0] != 0 or (table.dtype.kind == "i" and table.min() < 0):
            raise ValueError("table[0] must be 0 and segment ids non-negative")
        if np.shape(graph.fragment_bboxes) != (n + 1, 2 * nd):
            raise ValueError(f"graph bounding boxes do not fit a {nd}D volume")
        if boundaries is not None and tuple(boundaries.shape) != fragments.shape:
            raise ValueError(f"boundaries {boundaries.shape} do not match {fragments.shape}")
        self.fragments = fragments
        self.boundaries = boundaries
        self.voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)
        self._nd = nd
        self._n = n
        top = int(table.max())
        self._table = table.astype(np.uint32 if top < 2**32 - 1 else np.uint64)
        self._frag_box = np.array(graph.fragment_bboxes, dtype=np.int64)
        self._frag_size = np.array(graph.fragment_sizes, dtype=np.int64)
        self._edges = EdgeStore(graph)
        self._graph, self._graph_dirty = graph, False
        self._locks: set[int] = set()
        self._next_segment = top + 1
        self._build_index()

    @classmethod
    def from_result(cls, result, threshold: float | None = None) -> ProofreadingState:
        """Build the state of a segmentation result at a threshold.

        Parameters
        ----------
        result : SegmentationResult
            One-click segmentation result (its fragments are edited in place).
        threshold : float, optional
            Merge-score threshold of the starting table; the result's by default.

        Returns
        -------
        ProofreadingState
            The state.
        """
        threshold = result.threshold if threshold is None else threshold
        return cls(
            result.fragments,
            result.graph,
            result.table_at(threshold),
            boundaries=result.boundaries,
            voxel_size=result.voxel_size,
        )

    def _build_index(self) -> None:
        """Fragments, boxes and sizes of every segment, vectorised."""
        nd, n = self._nd, self._n
        seg = self._table[1 : n + 1].astype(np.int64)
        ids = np.arange(1, n + 1, dtype=np.uint64)[seg != 0]
        seg = seg[seg != 0]
        self._seg_frags, self._seg_box, self._seg_size = {}, {}, {}
        if not len(ids):
            return
        order = np.argsort(seg, kind="stable")
        seg, ids = seg[order], ids[order]
        ids.flags.writeable = False
        cuts = np.flatnonzero(seg[1:] != seg[:-1]) + 1
        starts = np.concatenate(([0], cuts))
        keys = seg[starts].tolist()
        sizes = self._frag_size[ids.astype(np.int64)]
        box = self._frag_box[ids.astype(np.int64)]
        present = sizes[:, None] > 0
        lo = np.minimum.reduceat(np.where(present, box[:, :nd], np.iinfo(np.int64).max), starts)
        hi = np.maximum.reduceat(np.where(present, box[:, nd:], 0), starts)
        total = np.add.reduceat(sizes, starts)
        lo[total == 0] = 0
        self._seg_frags = dict(zip(keys, np.split(ids, cuts), strict=True))
        self._seg_box = dict(zip(keys, np.concatenate([lo, hi], axis=1), strict=True))
        self._seg_size = dict(zip(keys, total.tolist(), strict=True))

    # ------------------------------------------------------------------ queries
    @property
    def ndim(self) -> int:
        """int: Number of dimensions of the volume."""
        return self._nd

    @property
    def n_fragments(self) -> int:
        """int: Largest fragment id ``N``."""
        return self._n

    @property
    def table(self) -> np.ndarray:
        """numpy.ndarray: The fragment-to-segment table, ``N + 1`` entries (a view: don't edit)."""
        return self._table[: self._n + 1]

    @property
    def graph(self) -> RegionGraph:
        """RegionGraph: The current region graph (rebuilt after voxel splits)."""
        if self._graph_dirty:
            n = self._n
            self._graph = self._edges.graph(
                self._frag_size[: n + 1].copy(), self._frag_box[: n + 1].copy()
            )
            self._graph_dirty = False
        return self._graph

    @property
    def locked(self) -> frozenset:
        """Frozenset of int: Locked segment ids."""
        return frozenset(self._locks)

    @property
    def next_segment_id(self) -> int:
        """int: The id the next new segment gets (never decreases)."""
        return self._next_segment

    @property
    def segments(self) -> np.ndarray:
        """numpy.ndarray: Sorted ids of the segments that have fragments."""
        return np.array(sorted(self._seg_frags), dtype=np.uint64)

    def has_segment(self, segment) -> bool:
        """Return whether a segment id has fragments."""
        return int(segment) in self._seg_frags

    def is_locked(self, segment) -> bool:
        """Return whether a segment is locked."""
        return int(segment) in self._locks

    def _check_segment(self, segment) -> int:
        s = int(segment)
        if s not in self._seg_frags:
            raise ValueError(f"there is no segment {s}")
        return s

    def segment_fragments(self, segment) -> np.ndarray:
        """Return the sorted ``uint64`` fragment ids of a segment (read-only)."""
        return self._seg_frags[self._check_segment(segment)]

    def segment_size(self, segment) -> int:
        """Return the number of voxels of a segment."""
        return int(self._seg_size[self._check_segment(segment)])

    def segment_bbox(self, segment) -> tuple[slice, ...]:
        """Return the bounding box of a segment as a tuple of slices."""
        box = self._seg_box[self._check_segment(segment)]
        return _slices(box[: self._nd], box[self._nd :])

    def fragment_bbox(self, fragment) -> tuple[slice, ...]:
        """Return the bounding box of a fragment as a tuple of slices (empty when absent)."""
        f = int(fragment)
        if not 0 < f <= self._n:
            raise ValueError(f"there is no fragment {f}")
        return _slices(self._frag_box[f, : self._nd], self._frag_box[f, self._nd :])

    def labels_in(self, bbox=None) -> np.ndarray:
        """Return the displayed segment ids in a region: a table lookup on that region only.

        Parameters
        ----------
        bbox : tuple of slice, optional
            Region; the whole volume by default (not for interactive use).

        Returns
        -------
        numpy.ndarray
            Segment ids, the region's shape (the table's dtype, ``uint32`` usually).
        """
        crop = self.fragments if bbox is None else self.fragments[tuple(bbox)]
        if crop.dtype == np.uint64:
            crop = crop.view(np.int64)  # ids < table size: same bits, faster take
        return np.take(self.table, crop)

    def segmentation(self) -> np.ndarray:
        """Return the segment ids of the whole volume (export, not interactive paths)."""
        return self.labels_in(None)

    def segment_at(self, position) -> int:
        """Return the segment id at a voxel position (0: no segment).

        Parameters
        ----------
        position : sequence of int or float
            ``(z, y, x)`` or ``(y, x)``, rounded to the nearest voxel.

        Returns
        -------
        int
            The segment id.
        """
        pos = tuple(int(np.rint(c)) for c in position)
        if len(pos) != self._nd or any(
            not 0 <= c < n for c, n in zip(pos, self.fragments.shape, strict=True)
        ):
            raise IndexError(f"position {pos} is outside the volume {self.fragments.shape}")
        return int(self._table[int(self.fragments[pos])])

    # ------------------------------------------------------------------- edits
    def apply(self, edit: Edit) -> tuple[slice, ...]:
        """Apply an edit (see :mod:`napari_connectome.core.edits`).

        Parameters
        ----------
        edit : Edit
            The edit.

        Returns
        -------
        tuple of slice
            Bounding box whose displayed labels may have changed (empty slices
            when none did): refresh ``labels_in(box)`` only.
        """
        return edit.apply(self)

    def set_locked(self, segment, locked: bool) -> tuple[slice, ...]:
        """Lock or unlock a segment (use :class:`LockEdit` for an undoable one).

        Returns
        -------
        tuple of slice
            An empty box: no label changes.
        """
        s = self._check_segment(segment)
        if bool(locked) == (s in self._locks):
            raise ValueError(f"segment {s} is already {'locked' if locked else 'unlocked'}")
        (self._locks.add if locked else self._locks.discard)(s)
        return _slices([0] * self._nd, [0] * self._nd)

    def _refuse_locked(self, segments) -> None:
        locked = sorted(set(segments) & self._locks)
        if locked:
            which = ", ".join(str(s) for s in locked)
            verb = "is" if len(locked) == 1 else "are"
            raise LockedSegmentError(f"segment {which} {verb} locked; unlock it before editing")

    def resolve_merge(self, segments) -> Change:
        """Return the change that merges segments (see :class:`MergeEdit`)."""
        segs = [int(s) for s in segments]
        if len(segs) < 2 or len(set(segs)) != len(segs):
            raise ValueError(f"a merge needs two or more distinct segments; got {segs}")
        for s in segs:
            self._check_segment(s)
        self._refuse_locked(segs)
        keep = max(segs, key=lambda s: (self._seg_size[s], -s))
        frags = np.concatenate([self._seg_frags[s] for s in segs if s != keep])
        old = self._table[frags.astype(np.int64)]
        return Change(TableChange(frags, old, np.full(len(frags), keep)), None, self._next_segment)

    def plan_split(self, segment, seeds) -> SplitPreview:
        """Plan the split of a segment between seed groups, without changing the state.

        Each seed group becomes one part.  Where seeds of two groups fall in
        the same fragment, that fragment is first cut by a seeded watershed
        of the boundary map inside its box (new fragment ids ``N + 1, ...``;
        region-graph edges recomputed from its box plus one voxel).  The
        segment's fragment graph is then cut by a seeded watershed on the
        graph (a minimum spanning forest from the seeds, growing along the
        lowest boundary scores, i.e. the highest affinities), so every part
        with one seed fragment is connected.  Fragments no seed can reach
        inside the segment go to the part with the nearest seed.

        Parameters
        ----------
        segment : int
            The segment.
        seeds : sequence of sequence of position
            Two or more groups of voxel positions inside the segment.

        Returns
        -------
        SplitPreview
            The parts, their future ids and the change that commits them.

        Raises
        ------
        LockedSegmentError
            If the segment is locked.
        ValueError
            For an unknown segment, fewer than two groups, or seeds outside the
            segment or in two groups at once.
        """
        return plan_split(self, segment, seeds)

    def preview_split(self, segment, seeds) -> SplitPreview:
        """Preview a split (see :meth:`plan_split`); the state is not changed.

        Returns
        -------
        SplitPreview
            Parts (fragment ids), future segment ids, voxel-level cut if any,
            and :meth:`SplitPreview.part_labels` for display.
        """
        return self.plan_split(segment, seeds)

    def apply_change(self, change: Change) -> tuple[slice, ...]:
        """Apply change data (what edits resolve to); checked fully before anything changes.

        Parameters
        ----------
        change : Change
            Table entries and optional voxel patch.

        Returns
        -------
        tuple of slice
            Bounding box of the changed fragments (and of the voxel patch).

        Raises
        ------
        LockedSegmentError
            If a segment the change touches is locked.
        ValueError
            If the change does not fit the state (old values differ: edits
            applied out of order).
        """
        t, p = change.table, change.patch
        n_after = self._n if p is None else p.n_new
        if p is not None and p.n_old != self._n:
            raise ValueError(
                f"the change expects {p.n_old} fragments, the state has {self._n}: "
                "apply edits and their inverses in order"
            )
        frags = t.fragments.astype(np.int64)
        if len(frags) and (frags[0] < 1 or frags[-1] > max(self._n, n_after)):
            raise ValueError("the change names fragment ids the state does not have")
        current = np.zeros(len(frags), dtype=np.uint64)
        inside = frags <= self._n
        current[inside] = self._table[frags[inside]]
        if not np.array_equal(current, t.old):
            raise ValueError("the change does not match the table: apply edits in order")
        segs = set(np.unique(t.old).tolist()) | set(np.unique(t.new).tolist())
        coords = None
        if p is not None:
            coords = np.unravel_index(p.index.astype(np.int64), p.shape)
            if not np.array_equal(self.fragments[p.box][coords], p.old):
                raise ValueError("the change does not match the fragments: apply edits in order")
            tt = p.touched.astype(np.int64)
            segs |= set(np.unique(self._table[tt[tt <= self._n]]).tolist())
        segs.discard(0)
        self._refuse_locked(segs)
        if p is not None:
            self._apply_patch(p, coords)
        self._set_table(frags, t.old, t.new, p)
        if n_after < self._n:  # the pieces of an undone voxel split are gone
            self._n = n_after
        self._next_segment = max(self._next_segment, int(change.next_segment))
        return self._changed_box(frags, p)

    def _apply_patch(self, p: FragmentPatch, coords) -> None:
        if p.n_new > self._n:
            cap = len(self._table)
            if p.n_new + 1 > cap:
                cap = max(p.n_new + 1, 2 * cap)
                self._table = resized(self._table, cap)
                self._frag_box = resized(self._frag_box, cap)
                self._frag_size = resized(self._frag_size, cap)
            self._n = p.n_new
        self.fragments[p.box][coords] = p.new.astype(self.fragments.dtype)
        tt = p.touched.astype(np.int64)
        self._frag_box[tt] = p.rows_new[:, :-1]
        self._frag_size[tt] = p.rows_new[:, -1]
        self._edges.kill(self._edges.touching(tt))
        self._edges.add(p.edges_new)
        self._graph_dirty = True

    def _box_of(self, frags: np.ndarray) -> tuple[np.ndarray, int]:
        idx = frags.astype(np.int64)
        sizes = self._frag_size[idx]
        rows = self._frag_box[idx[sizes > 0]]
        if not len(rows):
            return np.zeros(2 * self._nd, dtype=np.int64), 0
        nd = self._nd
        return np.concatenate([rows[:, :nd].min(0), rows[:, nd:].max(0)]), int(sizes.sum())

    def _set_table(self, frags, old, new, patch) -> None:
        """Write table entries and update the per-segment index."""
        moved = old != new
        frags, old, new = frags[moved], old[moved], new[moved]
        if len(new) and int(new.max()) > np.iinfo(self._table.dtype).max:
            self._table = self._table.astype(np.uint64)
        self._table[frags] = new
        recompute = set()
        if patch is not None:
            tt = patch.touched.astype(np.int64)
            recompute |= set(np.unique(self._table[tt[tt <= self._n]]).tolist())
        for s in np.unique(old).tolist():
            if s == 0:
                continue
            lost = frags[old == s]
            cur = self._seg_frags[s]
            self._seg_frags[s] = np.delete(cur, np.searchsorted(cur, lost.astype(np.uint64)))
            recompute.add(s)
        for s in np.unique(new).tolist():
            if s == 0:
                continue
            gained = frags[new == s].astype(np.uint64)
            cur = self._seg_frags.get(s)
            if cur is None:
                recompute.add(s)
                merged = gained
            else:
                merged = np.concatenate([cur, gained])
                merged.sort(kind="stable")  # two sorted runs: a linear merge
                if s not in recompute:
                    box, size = self._box_of(gained)
                    old_box, nd = self._seg_box[s], self._nd
                    if self._seg_size[s] and size:
                        box = np.concatenate(
                            [
                                np.minimum(old_box[:nd], box[:nd]),
                                np.maximum(old_box[nd:], box[nd:]),
                            ]
                        )
                    elif not size:
                        box = old_box
                    self._seg_box[s], self._seg_size[s] = box, self._seg_size[s] + size
            merged.flags.writeable = False
            self._seg_frags[s] = merged
        for s in recompute:
            cur = self._seg_frags.get(s)
            if cur is None or not len(cur):
                for index in (self._seg_frags, self._seg_box, self._seg_size):
                    index.pop(s, None)
            else:
                self._seg_box[s], self._seg_size[s] = self._box_of(cur)

    def _changed_box(self, frags: np.ndarray, patch) -> tuple[slice, ...]:
        nd = self._nd
        idx = frags[frags <= self._n]
        rows = self._frag_box[idx[self._frag_size[idx] > 0]]
        lo = [rows[:, :nd].min(0)] if len(rows) else []
        hi = [rows[:, nd:].max(0)] if len(rows) else []
        if patch is not None:
            lo.append(np.asarray(patch.start))
            hi.append(np.asarray(patch.start) + np.asarray(patch.shape))
        if not lo:
            return _slices([0] * nd, [0] * nd)
        return _slices(np.min(lo, axis=0), np.max(hi, axis=0))
