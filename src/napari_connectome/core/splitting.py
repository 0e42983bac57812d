"""Planning a split: seeded cuts of a segment's fragment graph, and of fragments by voxels.

:func:`plan_split` computes, without changing the state, how a segment splits
between groups of seed voxels, and the compact
:class:`~napari_connectome.core.edits.Change` that commits it:

1. Where seeds of two groups fall in the same fragment, that fragment is cut
   by a seeded watershed (scikit-image) of the boundary map inside its
   bounding box, the mask being the fragment.  The pieces get new fragment
   ids, and the region-graph edges of the cut fragments are recomputed from
   their box plus a one-voxel margin (exact: every face of a cut voxel lies
   there).
2. The segment's fragment graph (region-graph edges between its fragments,
   scored by the mean boundary probability of the contact; affinity is
   ``1 - score``) is cut by a seeded watershed on the graph: a minimum
   spanning forest grown from the seed fragments along the lowest scores
   (constrained Kruskal on the minimum spanning tree).  A part whose group
   has one seed fragment is connected; fragments no seed reaches inside the
   segment go to the part with the nearest seed.

The largest part (most voxels; the lowest group index on a tie) keeps the
segment id; the other parts get new ids in group order.

Pure numpy/scipy/scikit-image: no Qt, no napari, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

from .edge_store import EDGE_FIELDS
from .edits import Change, FragmentPatch, LockedSegmentError, TableChange
from .region_graph import build_region_graph

__all__ = ["SplitPreview", "plan_split"]


def _msf_cut(k, iu, iv, score, seed_nodes, seed_groups):
    """Seeded watershed cut of a graph: labels grown from seeds along the lowest scores.

    Constrained Kruskal over the minimum spanning tree (the same result as over
    all edges): regions merge in order of increasing score unless both carry
    different seed labels.  Returns each node's label (-1: no seed reachable)
    and its region root.
    """
    label = np.full(k, -1, dtype=np.int64)
    label[seed_nodes] = seed_groups
    if len(iu) == 0:
        return label, np.arange(k)
    weights = 1.0 + np.asarray(score, dtype=np.float64)  # > 0: zeros would be dropped
    mst = minimum_spanning_tree(coo_matrix((weights, (iu, iv)), shape=(k, k)).tocsr()).tocoo()
    order = np.lexsort((mst.col, mst.row, mst.data))
    parent = list(range(k))
    lab = label.tolist()

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(mst.row[order].tolist(), mst.col[order].tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra == rb or (lab[ra] >= 0 and lab[rb] >= 0 and lab[ra] != lab[rb]):
            continue
        parent[rb] = ra
        if lab[ra] < 0:
            lab[ra] = lab[rb]
    roots = np.fromiter((find(x) for x in range(k)), dtype=np.int64, count=k)
    return np.asarray(lab, dtype=np.int64)[roots], roots


@dataclass
class SplitPreview:
    """A proposed split, computed without changing the state.

    Attributes
    ----------
    segment : int
        The segment to split.
    parts : dict of int to numpy.ndarray
        Seed-group index -> fragment ids of that part (pieces of fragments cut
        by voxels carry the new ids they would get).
    segment_ids : dict of int to int
        Seed-group index -> segment id the part would get (the largest part
        keeps ``segment``).
    sizes : dict of int to int
        Seed-group index -> voxels in the part.
    voxel_bbox : tuple of slice or None
        Box of the fragments cut by voxels (None when none is).
    voxel_labels : numpy.ndarray or None
        Part index + 1 of each voxel of the cut fragments in ``voxel_bbox``,
        0 elsewhere.
    change : Change
        The change that commits the split.
    """

    segment: int
    parts: dict
    segment_ids: dict
    sizes: dict
    voxel_bbox: tuple | None
    voxel_labels: np.ndarray | None
    change: Change = field(repr=False)
    state: object = field(repr=False)

    def part_labels(self, bbox=None) -> np.ndarray:
        """Return part index + 1 for the segment's voxels in a box, 0 elsewhere.

        Parameters
        ----------
        bbox : tuple of slice, optional
            Region; the segment's bounding box by default.

        Returns
        -------
        numpy.ndarray
            ``uint8`` labels, the region's shape (reads that region only).
        """
        bbox = self.state.segment_bbox(self.segment) if bbox is None else tuple(bbox)
        crop = self.state.fragments[bbox].astype(np.uint64)
        ids = np.concatenate([self.parts[g] for g in sorted(self.parts)])
        lab = np.concatenate([np.full(len(self.parts[g]), g + 1) for g in sorted(self.parts)])
        order = np.argsort(ids)
        ids, lab = ids[order], lab[order].astype(np.uint8)
        pos = np.minimum(np.searchsorted(ids, crop), len(ids) - 1)
        out = np.where(ids[pos] == crop, lab[pos], 0).astype(np.uint8)
        if self.voxel_bbox is not None:
            inter = [
                slice(max(a.start, b.start), min(a.stop, b.stop))
                for a, b in zip(bbox, self.voxel_bbox, strict=True)
            ]
            if all(s.stop > s.start for s in inter):
                dst = tuple(
                    slice(s.start - a.start, s.stop - a.start)
                    for s, a in zip(inter, bbox, strict=True)
                )
                src = tuple(
                    slice(s.start - v.start, s.stop - v.start)
                    for s, v in zip(inter, self.voxel_bbox, strict=True)
                )
                vox = self.voxel_labels[src]
                out[dst] = np.where(vox > 0, vox, out[dst])
        return out


def _check_seeds(state, seeds) -> tuple[np.ndarray, np.ndarray, int]:
    """Seed positions ``(P, ndim)`` and their group index ``(P,)``."""
    groups = list(seeds)
    nd = state.ndim
    if len(groups) < 2:
        raise ValueError(f"a split needs two or more seed groups; got {len(groups)}")
    pts, gid = [], []
    for g, group in enumerate(groups):
        arr = np.rint(np.asarray(group, dtype=np.float64))
        if arr.ndim == 1 and arr.size == nd:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != nd or len(arr) == 0:
            raise ValueError(f"seed group {g} must be a non-empty list of {nd}D positions")
        arr = arr.astype(np.int64)
        outside = np.any((arr < 0) | (arr >= np.asarray(state.fragments.shape)), axis=1)
        if outside.any():
            raise ValueError(f"seed {tuple(arr[outside][0].tolist())} is outside the volume")
        pts.append(arr)
        gid.append(np.full(len(arr), g, dtype=np.int64))
    pts, gid = np.concatenate(pts), np.concatenate(gid)
    _, voxel = np.unique(pts, axis=0, return_inverse=True)
    pairs = np.unique(np.stack([voxel.reshape(-1), gid], axis=1), axis=0)
    twice = np.bincount(pairs[:, 0]) > 1
    if twice.any():
        where = pts[np.flatnonzero(twice[voxel.reshape(-1)])[0]]
        raise ValueError(f"seed {tuple(where.tolist())} is in two seed groups")
    return pts, gid, len(groups)


def _boundaries(state, box) -> np.ndarray:
    if state.boundaries is None:
        return np.zeros(tuple(s.stop - s.start for s in box), dtype=np.float32)
    crop = np.asarray(state.boundaries[box])
    if crop.dtype == np.uint8:
        return crop.astype(np.float32) / np.float32(255.0)
    return np.clip(crop.astype(np.float32, copy=False), 0.0, 1.0)


def _cut_fragments(state, shared, pts, gid, frag_at):
    """Cut fragments holding seeds of several groups; return the patch and more.

    Returns the :class:`FragmentPatch`, the fragment of each seed after the
    cut, the patched box and the part index + 1 of each voxel of the cut
    fragments in it.
    """
    from skimage.segmentation import watershed

    nd, n = state.ndim, state.n_fragments
    fbox = state._frag_box  # noqa: SLF001 - sibling module of the state
    boxes = fbox[shared]
    start, stop = boxes[:, :nd].min(0), boxes[:, nd:].max(0)
    box = tuple(slice(int(a), int(b)) for a, b in zip(start, stop, strict=True))
    shape = tuple(int(v) for v in stop - start)
    crop = state.fragments[box]
    image = np.rint(_boundaries(state, box) * 255.0).astype(np.uint8)
    voxel_labels = np.zeros(shape, dtype=np.uint8)
    seed_frag = frag_at.copy()
    next_id = n + 1
    index, new = [], []
    for f in shared.tolist():
        sub = tuple(
            slice(int(fbox[f, i] - start[i]), int(fbox[f, nd + i] - start[i])) for i in range(nd)
        )
        mask = crop[sub] == f
        sel = frag_at == f
        markers = np.zeros(mask.shape, dtype=np.int32)
        markers[tuple((pts[sel] - fbox[f, :nd]).T)] = gid[sel] + 1
        lab = watershed(image[sub], markers, connectivity=1, mask=mask)
        present = np.unique(gid[sel])
        counts = np.bincount(lab[mask], minlength=int(present.max()) + 2)
        keeper = int(present[np.argmax(counts[present + 1])])
        lab[mask & (lab == 0)] = keeper + 1  # voxels no seed reaches keep the fragment id
        ids = {}
        for g in present.tolist():
            ids[g] = f if g == keeper else next_id
            next_id += g != keeper
        voxel_labels[sub][mask] = lab[mask]
        for g, new_id in ids.items():
            if new_id == f:
                continue
            where = np.nonzero(lab == g + 1)
            coords = tuple(c + s.start for c, s in zip(where, sub, strict=True))
            index.append(np.ravel_multi_index(coords, shape))
            new.append(np.full(len(where[0]), new_id, dtype=np.uint64))
        seed_frag[sel] = [ids[g] for g in gid[sel].tolist()]
    index, new = np.concatenate(index), np.concatenate(new)
    order = np.argsort(index)
    index, new = index[order], new[order]
    old = crop[np.unravel_index(index, shape)]
    touched = np.concatenate(
        [shared.astype(np.uint64), np.arange(n + 1, next_id, dtype=np.uint64)]
    )
    edges_new, rows_new = _local_graph(state, start, stop, index, new, touched)
    edges = state._edges  # noqa: SLF001
    rows_old = np.zeros_like(rows_new)
    rows_old[: len(shared), :-1] = fbox[shared]
    rows_old[: len(shared), -1] = state._frag_size[shared]  # noqa: SLF001
    patch = FragmentPatch(
        start=tuple(int(a) for a in start),
        shape=shape,
        index=index.astype(np.uint32 if np.prod(shape) < 2**32 else np.int64),
        old=old.astype(np.uint64),
        new=new,
        touched=touched,
        rows_old=rows_old,
        rows_new=rows_new,
        edges_old=edges.take(edges.touching(shared)),
        edges_new=edges_new,
        n_old=n,
        n_new=next_id - 1,
    )
    return patch, seed_frag, box, voxel_labels


def _local_graph(state, start, stop, index, new, touched):
    """Region-graph edges and fragment rows of the touched fragments after the cut."""
    nd = state.ndim
    r0 = np.maximum(start - 1, 0)
    r1 = np.minimum(stop + 1, np.asarray(state.fragments.shape))
    region = tuple(slice(int(a), int(b)) for a, b in zip(r0, r1, strict=True))
    frag = state.fragments[region].astype(np.uint64)
    coords = np.unravel_index(index, tuple(int(v) for v in stop - start))
    frag[tuple(c + int(start[i] - r0[i]) for i, c in enumerate(coords))] = new
    uniq, inverse = np.unique(frag, return_inverse=True)
    if uniq[0] != 0:
        uniq, inverse = np.concatenate([[np.uint64(0)], uniq]), inverse + 1
    local = inverse.reshape(frag.shape).astype(np.uint64)
    graph = build_region_graph(
        local, _boundaries(state, region), state.voxel_size, n_fragments=len(uniq) - 1
    )
    is_touched = np.zeros(len(uniq), dtype=bool)
    lt = np.searchsorted(uniq, touched)
    is_touched[lt] = True
    e = graph.edges.astype(np.int64)
    keep = is_touched[e[:, 0]] | is_touched[e[:, 1]]
    edges = {f: getattr(graph, f)[keep] for f in EDGE_FIELDS}
    edges["edges"] = uniq[e[keep]]
    rows = np.zeros((len(touched), 2 * nd + 1), dtype=np.int64)
    rows[:, :-1] = graph.fragment_bboxes[lt] + np.concatenate([r0, r0])
    rows[:, -1] = graph.fragment_sizes[lt]
    return edges, rows


def _segment_graph(state, frags, patch):
    """Edges (node indices into ``frags``) and scores of the segment's fragment graph."""
    store = state._edges  # noqa: SLF001
    rows = store.touching(frags[frags <= state.n_fragments])
    e = store.data["edges"][rows]
    ssum, weight = store.data["score_sum"][rows], store.data["contact_weight"][rows]
    if patch is not None:
        clean = ~np.isin(e, patch.touched).any(axis=1)
        e = np.concatenate([e[clean], patch.edges_new["edges"]])
        ssum = np.concatenate([ssum[clean], patch.edges_new["score_sum"]])
        weight = np.concatenate([weight[clean], patch.edges_new["contact_weight"]])
    k = len(frags)
    iu, iv = np.searchsorted(frags, e[:, 0]), np.searchsorted(frags, e[:, 1])
    inside = (iu < k) & (iv < k)
    inside[inside] &= (frags[iu[inside]] == e[inside, 0]) & (frags[iv[inside]] == e[inside, 1])
    score = ssum / np.where(weight > 0, weight, 1.0)
    return iu[inside], iv[inside], score[inside]


def plan_split(state, segment, seeds) -> SplitPreview:
    """Plan the split of a segment between seed groups, without changing the state.

    Parameters
    ----------
    state : ProofreadingState
        The state (read only).
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
    s = int(segment)
    if not state.has_segment(s):
        raise ValueError(f"there is no segment {s}")
    if state.is_locked(s):
        raise LockedSegmentError(f"segment {s} is locked; unlock it before editing")
    pts, gid, n_groups = _check_seeds(state, seeds)
    n, nd, table = state.n_fragments, state.ndim, state.table
    frag_at = state.fragments[tuple(pts.T)].astype(np.int64)
    wrong = np.flatnonzero(table[frag_at] != s)
    if wrong.size:
        i = wrong[0]
        raise ValueError(
            f"seed {tuple(pts[i].tolist())} of group {gid[i]} is in segment "
            f"{int(table[frag_at[i]])}, not in segment {s}"
        )
    pairs = np.unique(np.stack([frag_at, gid], axis=1), axis=0)
    ids, counts = np.unique(pairs[:, 0], return_counts=True)
    shared = ids[counts > 1]
    patch, vbox, vlab, seed_frag = None, None, None, frag_at
    frags = state.segment_fragments(s).astype(np.int64)
    sizes = state._frag_size[frags]  # noqa: SLF001
    boxes = state._frag_box[frags]  # noqa: SLF001
    if shared.size:
        patch, seed_frag, vbox, vlab = _cut_fragments(state, shared, pts, gid, frag_at)
        added = np.arange(n + 1, patch.n_new + 1, dtype=np.int64)
        frags = np.concatenate([frags, added])
        sizes = np.concatenate([sizes, np.zeros(len(added), np.int64)])
        boxes = np.concatenate([boxes, np.zeros((len(added), 2 * nd), np.int64)])
        pos = np.searchsorted(frags, patch.touched.astype(np.int64))
        sizes[pos], boxes[pos] = patch.rows_new[:, -1], patch.rows_new[:, :-1]
    iu, iv, score = _segment_graph(state, frags.astype(np.uint64), patch)
    label, roots = _msf_cut(len(frags), iu, iv, score, np.searchsorted(frags, seed_frag), gid)
    if (label < 0).any():
        _assign_nearest(label, roots, boxes, sizes, pts, gid, state.voxel_size)
    parts = {g: frags[label == g].astype(np.uint64) for g in range(n_groups)}
    part_sizes = {g: int(sizes[label == g].sum()) for g in range(n_groups)}
    keeper = max(range(n_groups), key=lambda g: (part_sizes[g], -g))
    next_id = state.next_segment_id
    segment_ids = {}
    for g in range(n_groups):
        segment_ids[g] = s if g == keeper else next_id
        next_id += g != keeper
    moved = (label != keeper) | (frags > n)
    target = np.array([segment_ids[g] for g in range(n_groups)], dtype=np.uint64)[label[moved]]
    old = np.where(frags[moved] > n, 0, s).astype(np.uint64)
    change = Change(TableChange(frags[moved], old, target), patch, next_id)
    return SplitPreview(s, parts, segment_ids, part_sizes, vbox, vlab, change, state)


def _assign_nearest(label, roots, boxes, sizes, pts, gid, voxel_size) -> None:
    """Give each region no seed reaches the label of the nearest seed (in place)."""
    nd = pts.shape[1]
    scale = np.asarray(voxel_size if voxel_size is not None else (1.0,) * nd)
    centre = (boxes[:, :nd] + boxes[:, nd:]) / 2.0 * scale
    seeds = (pts + 0.5) * scale
    for root in np.unique(roots[label < 0]).tolist():
        members = roots == root
        weight = np.maximum(sizes[members], 1)[:, None]
        c = (centre[members] * weight).sum(0) / weight.sum()
        label[members] = gid[np.argmin(((seeds - c) ** 2).sum(1))]
