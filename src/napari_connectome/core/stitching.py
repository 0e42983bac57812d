"""Stitch per-block segmentation states into one: block grids, face contacts, graph merging.

Blockwise segmentation cuts a volume into blocks (cores) and builds fragments
and a region graph inside each core with block-local ids ``1..n_b``.  This
module joins them into the state a whole-volume run would have:

- :func:`block_grid` lays the blocks out (cores, and the cores grown by a
  halo for the model's context, clipped to the volume);
- :func:`face_contacts` computes the region-graph edges between the fragments
  on the two sides of a block face, from the face-adjacent voxel pairs and
  their quantised boundary values, with exactly the statistics
  :func:`~napari_connectome.core.region_graph.build_region_graph` gives every
  other contact (area, weight, score sum, max and quantile score);
- :func:`merge_block_graphs` shifts each block's ids by the number of
  fragments in the blocks before it (so ids are globally unique and
  consecutive) and concatenates the block graphs and the face contacts into
  one :class:`~napari_connectome.core.region_graph.RegionGraph`.

Every voxel face between two fragments lies either inside one core (an edge of
that block's graph) or on the face between two face-adjacent cores (an edge of
exactly one :func:`face_contacts` call), so no edge is counted twice and the
global agglomeration merges across faces exactly as it does inside a block.

Pure numpy.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .region_graph import SCORE_QUANTILE, RegionGraph

__all__ = [
    "Block",
    "block_grid",
    "face_contacts",
    "join_fragments",
    "match_face_fragments",
    "merge_block_graphs",
]

_QMAX = 510.0  # a face value is the sum of two 8-bit boundary values


@dataclass(frozen=True)
class Block:
    """One block of a grid.

    Attributes
    ----------
    index : tuple of int
        Position in the grid, one per axis.
    core : tuple of slice
        The voxels this block owns (cores tile the volume without overlap).
    outer : tuple of slice
        The core grown by the halo on every side, clipped to the volume: what
        the model reads.
    """

    index: tuple
    core: tuple
    outer: tuple

    @property
    def origin(self) -> tuple:
        """Return the first voxel of the core."""
        return tuple(s.start for s in self.core)

    @property
    def shape(self) -> tuple:
        """Return the shape of the core."""
        return tuple(s.stop - s.start for s in self.core)

    @property
    def inner(self) -> tuple:
        """Return the core in the coordinates of the outer box."""
        return tuple(
            slice(c.start - o.start, c.stop - o.start)
            for c, o in zip(self.core, self.outer, strict=True)
        )

    @property
    def name(self) -> str:
        """Return a file-name-safe name, ``"b0_1_2"``."""
        return "b" + "_".join(str(i) for i in self.index)


def _ints(values, ndim: int, what: str, minimum: int) -> tuple:
    values = tuple(values)
    if len(values) != ndim:
        raise ValueError(f"{what} needs {ndim} values, one per axis; got {list(values)}")
    out = []
    for v in values:
        if isinstance(v, bool) or int(v) != v or int(v) < minimum:
            raise ValueError(f"{what} must be integers >= {minimum}; got {list(values)}")
        out.append(int(v))
    return tuple(out)


def block_grid(shape: Sequence[int], block_size: Sequence[int], halo=0) -> list[Block]:
    """Cut a volume into blocks of ``block_size`` (the last ones along an axis may be smaller).

    Parameters
    ----------
    shape : sequence of int
        Volume shape.
    block_size : sequence of int
        Core size per axis (positive).
    halo : int or sequence of int, optional
        Context added on each side of a core per axis (clipped to the volume).

    Returns
    -------
    list of Block
        Blocks in C order of their grid index.

    Raises
    ------
    ValueError
        If the sizes do not match the volume's dimensions or are not positive integers.

    Examples
    --------
    >>> [b.core for b in block_grid((5,), (3,))]
    [(slice(0, 3, None),), (slice(3, 5, None),)]
    """
    shape = _ints(shape, len(tuple(shape)), "shape", 1)
    nd = len(shape)
    size = _ints(block_size, nd, "block size", 1)
    halo = _ints((halo,) * nd if np.isscalar(halo) else halo, nd, "halo", 0)
    starts = [range(0, n, b) for n, b in zip(shape, size, strict=True)]
    blocks = []
    for index in itertools.product(*(range(len(s)) for s in starts)):
        core, outer = [], []
        for axis, i in enumerate(index):
            lo = i * size[axis]
            hi = min(lo + size[axis], shape[axis])
            core.append(slice(lo, hi))
            outer.append(slice(max(0, lo - halo[axis]), min(shape[axis], hi + halo[axis])))
        blocks.append(Block(tuple(index), tuple(core), tuple(outer)))
    return blocks


def face_contacts(ids_low, ids_high, q_low, q_high, face_area: float = 1.0):
    """Region-graph edges across one block face.

    Parameters
    ----------
    ids_low, ids_high : numpy.ndarray
        Global fragment ids of the last plane of the lower block and the first
        plane of the upper block along the face's axis (same shape; 0 = no
        fragment, ignored).
    q_low, q_high : numpy.ndarray
        Their boundary probabilities quantised to ``0..255`` (``uint8``).
    face_area : float, optional
        Weight of one voxel face (nm^2 of the face's orientation, or 1).

    Returns
    -------
    tuple of numpy.ndarray
        ``(edges, contact_area, contact_weight, score_sum, max_score,
        quantile_score)`` as in :class:`~napari_connectome.core.region_graph.RegionGraph`:
        ``(E, 2)`` ``uint64`` pairs ``u < v`` sorted, then the per-edge statistics.

    Raises
    ------
    ValueError
        If the planes do not all have the same shape.
    """
    a = np.asarray(ids_low).astype(np.uint64, copy=False).ravel()
    b = np.asarray(ids_high).astype(np.uint64, copy=False).ravel()
    qa, qb = np.asarray(q_low), np.asarray(q_high)
    shapes = {np.shape(ids_low), np.shape(ids_high), qa.shape, qb.shape}
    if len(shapes) != 1:
        raise ValueError(f"face planes must all have one shape; got {sorted(shapes)}")
    q = qa.astype(np.uint16).ravel() + qb.astype(np.uint16).ravel()
    sel = (a != 0) & (b != 0) & (a != b)
    a, b, q = a[sel], b[sel], q[sel]
    u, v = np.minimum(a, b), np.maximum(a, b)
    order = np.lexsort((q, v, u))
    u, v, q = u[order], v[order], q[order]
    if u.size:
        change = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
        starts = np.concatenate(([0], np.flatnonzero(change) + 1))
    else:
        starts = np.zeros(0, dtype=np.intp)
    area = np.diff(np.append(starts, u.size)).astype(np.int64)
    edges = np.stack([u[starts], v[starts]], axis=1).reshape(-1, 2)
    face_area = float(face_area)
    weight = area * face_area
    qsum = np.add.reduceat(q.astype(np.int64), starts) if starts.size else np.zeros(0, np.int64)
    score_sum = (qsum * face_area) / _QMAX
    max_score = q[starts + area - 1].astype(np.float32) / np.float32(_QMAX)
    rank = np.floor(SCORE_QUANTILE * (area - 1)).astype(np.int64)
    quantile = q[starts + rank].astype(np.float32) / np.float32(_QMAX)
    return edges, area, weight.astype(np.float64), score_sum, max_score, quantile


def merge_block_graphs(blocks: Sequence[dict], faces: Sequence[tuple] = ()) -> RegionGraph:
    """Join per-block region graphs and face contacts into one global graph.

    Parameters
    ----------
    blocks : sequence of dict
        One per block, in the order that assigns ids: ``origin`` (first voxel
        of the core) and the block's :class:`RegionGraph` fields with local
        ids ``1..n`` (``edges``, ``contact_area``, ``contact_weight``,
        ``score_sum``, ``max_score``, ``quantile_score``, ``fragment_sizes``
        of length ``n + 1``, ``fragment_bboxes`` in core coordinates).
    faces : sequence of tuple
        Outputs of :func:`face_contacts`, already in global ids.

    Returns
    -------
    RegionGraph
        The graph of the whole volume: block ``k``'s fragment ``i`` has id
        ``i + sum(n of blocks before k)``; edges sorted, each pair once.

    Raises
    ------
    ValueError
        If a block's arrays disagree in length or an edge appears twice.
    """
    fields = ("contact_area", "contact_weight", "score_sum", "max_score", "quantile_score")
    dtypes = (np.int64, np.float64, np.float64, np.float32, np.float32)
    edges, stats = [], [[] for _ in fields]
    sizes, boxes = [np.zeros(1, np.int64)], []
    offset = 0
    nd = None
    for block in blocks:
        local_sizes = np.asarray(block["fragment_sizes"], dtype=np.int64)
        n = local_sizes.size - 1
        box = np.asarray(block["fragment_bboxes"], dtype=np.int64)
        nd = box.shape[1] // 2 if nd is None else nd
        if box.shape != (n + 1, 2 * nd):
            raise ValueError(f"block at {block['origin']}: bounding boxes do not match its sizes")
        e = np.asarray(block["edges"], dtype=np.uint64).reshape(-1, 2)
        if e.size and int(e.max()) > n:
            raise ValueError(f"block at {block['origin']}: an edge names an id above {n}")
        edges.append(e + np.uint64(offset))
        for out, name in zip(stats, fields, strict=True):
            out.append(np.asarray(block[name]))
        sizes[0][0] += local_sizes[0]
        sizes.append(local_sizes[1:])
        box = box[1:].copy()
        present = (box[:, nd:] > box[:, :nd]).all(axis=1)
        origin = np.asarray(block["origin"], dtype=np.int64)
        box[present] += np.concatenate([origin, origin])
        boxes.append(box)
        offset += n
    for face in faces:
        edges.append(np.asarray(face[0], dtype=np.uint64).reshape(-1, 2))
        for out, value in zip(stats, face[1:], strict=True):
            out.append(np.asarray(value))
    nd = nd or 3
    edge_array = np.concatenate(edges) if edges else np.zeros((0, 2), np.uint64)
    columns = [
        np.concatenate(s).astype(t, copy=False) if s else np.zeros(0, t)
        for s, t in zip(stats, dtypes, strict=True)
    ]
    order = np.lexsort((edge_array[:, 1], edge_array[:, 0]))
    edge_array = edge_array[order]
    columns = [c[order] for c in columns]
    if len(edge_array) > 1:
        same = (edge_array[1:] == edge_array[:-1]).all(axis=1)
        if same.any():
            raise ValueError(f"edge {edge_array[1:][same][0].tolist()} appears twice")
    bbox_rows = [np.zeros((1, 2 * nd), np.int64), *boxes]
    return RegionGraph(
        edges=edge_array,
        contact_area=columns[0],
        contact_weight=columns[1],
        score_sum=columns[2],
        max_score=columns[3],
        quantile_score=columns[4],
        fragment_sizes=np.concatenate(sizes),
        fragment_bboxes=np.concatenate(bbox_rows),
    )


def match_face_fragments(low_own, low_seen, high_own, high_seen) -> np.ndarray:
    """Pair the pieces of fragments that a block face cut in two.

    Each block makes its fragments on its core grown by a small halo and keeps
    its own ids for the halo planes next to its faces too.  A fragment cut by
    the face then shows in both blocks' views of the two face planes; two
    pieces are the same fragment when each covers more than half of the
    other's voxels there.

    Parameters
    ----------
    low_own, low_seen : numpy.ndarray
        The lower block's ids on its last core plane and on the plane beyond
        it (the upper block's first plane), 0 where none.
    high_own, high_seen : numpy.ndarray
        The upper block's ids on its first core plane and on the plane before
        it (the lower block's last plane).

    Returns
    -------
    numpy.ndarray
        ``(K, 2)`` pairs ``(low id, high id)`` of pieces of one fragment
        (each id at most once).

    Raises
    ------
    ValueError
        If the planes do not all have the same shape.
    """
    shapes = {np.shape(x) for x in (low_own, low_seen, high_own, high_seen)}
    if len(shapes) != 1:
        raise ValueError(f"face planes must all have one shape; got {sorted(shapes)}")
    a = np.concatenate([np.ravel(low_own), np.ravel(low_seen)]).astype(np.int64)
    b = np.concatenate([np.ravel(high_seen), np.ravel(high_own)]).astype(np.int64)
    if a.size == 0:
        return np.zeros((0, 2), np.int64)
    both = (a > 0) & (b > 0)
    pairs, counts = np.unique(np.stack([a[both], b[both]], axis=1), axis=0, return_counts=True)
    if not len(pairs):
        return np.zeros((0, 2), np.int64)
    size_a = np.bincount(a, minlength=int(a.max()) + 1)
    size_b = np.bincount(b, minlength=int(b.max()) + 1)
    same = (2 * counts > size_a[pairs[:, 0]]) & (2 * counts > size_b[pairs[:, 1]])
    return pairs[same]


def join_fragments(graph: RegionGraph, pairs) -> tuple[RegionGraph, np.ndarray]:
    """Join fragments into one (e.g. the pieces of a fragment cut by block faces).

    Parameters
    ----------
    graph : RegionGraph
        The graph with the pieces as separate fragments.
    pairs : array_like
        ``(K, 2)`` fragment ids to join (chains join transitively).

    Returns
    -------
    graph : RegionGraph
        The graph of the joined fragments, ids consecutive ``1..N'`` in the
        order of each group's smallest old id: the edges between pieces are
        gone, edges to a common neighbour are pooled (areas, weights and
        score sums add up, the max is the max, the quantile becomes the
        contact-area-weighted mean of the pieces' quantiles), sizes add up and
        bounding boxes are united.
    table : numpy.ndarray
        ``(N + 1,)`` ``uint64`` old id -> new id (``table[0] == 0``).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = graph.n_fragments
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    adjacency = coo_matrix(
        (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n + 1, n + 1)
    )
    _, group = connected_components(adjacency, directed=False)
    # new ids in order of each group's smallest old id; id 0 stays 0
    first = np.full(group.max() + 1, n + 1, dtype=np.int64)
    np.minimum.at(first, group, np.arange(n + 1))
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    table = rank[group].astype(np.uint64)
    m = int(table.max())
    sizes = np.bincount(table.astype(np.intp), weights=graph.fragment_sizes, minlength=m + 1)
    box = np.asarray(graph.fragment_bboxes)
    nd = box.shape[1] // 2
    present = (box[:, nd:] > box[:, :nd]).all(axis=1)
    present[0] = False
    boxes = np.zeros((m + 1, 2 * nd), np.int64)
    lo = np.full((m + 1, nd), np.iinfo(np.int64).max)
    hi = np.full((m + 1, nd), np.iinfo(np.int64).min)
    ids = table[present].astype(np.intp)
    np.minimum.at(lo, ids, box[present, :nd])
    np.maximum.at(hi, ids, box[present, nd:])
    ok = hi[:, 0] > np.iinfo(np.int64).min
    boxes[ok, :nd], boxes[ok, nd:] = lo[ok], hi[ok]
    u = table[graph.edges[:, 0].astype(np.intp)]
    v = table[graph.edges[:, 1].astype(np.intp)]
    keep = u != v
    u, v = np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep])
    area = graph.contact_area[keep]
    columns = [area, graph.contact_weight[keep], graph.score_sum[keep]]
    qmax, quant = graph.max_score[keep], graph.quantile_score[keep]
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    columns = [c[order] for c in columns]
    qmax, quant = qmax[order], quant[order]
    if u.size:
        change = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
        starts = np.concatenate(([0], np.flatnonzero(change) + 1))
        area_sum = np.add.reduceat(columns[0], starts)
        quant = np.add.reduceat(quant * columns[0], starts) / area_sum
        columns = [np.add.reduceat(c, starts) for c in columns]
        qmax = np.maximum.reduceat(qmax, starts)
        u, v = u[starts], v[starts]
    joined = RegionGraph(
        edges=np.stack([u, v], axis=1).reshape(-1, 2).astype(np.uint64),
        contact_area=columns[0].astype(np.int64),
        contact_weight=columns[1].astype(np.float64),
        score_sum=columns[2].astype(np.float64),
        max_score=qmax.astype(np.float32),
        quantile_score=quant.astype(np.float32),
        fragment_sizes=np.rint(sizes).astype(np.int64),
        fragment_bboxes=boxes,
    )
    return joined, table
