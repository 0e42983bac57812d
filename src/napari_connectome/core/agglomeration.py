"""Hierarchical agglomeration of fragments and fragment-to-segment tables.

The segmentation state is ``fragments`` (voxels -> fragment id), a
:class:`~napari_connectome.core.region_graph.RegionGraph` and a lookup
``table`` (fragment id -> segment id): ``segmentation = table[fragments]``.

:func:`agglomerate` merges regions in order of increasing merge score and
records the full merge order in a :class:`MergeTree`.  The merge score of two
regions is the contact-area-weighted mean of per-contact scores over all
fragment contacts between them (physical face areas when the graph was built
with a voxel size) (average linkage, waterz's "mean affinity"), recomputed as
regions merge.  Because a merged region's score to a neighbour is a weighted
average of two scores that are both at least the current minimum, merge scores
never decrease.

The per-contact score (:func:`edge_merge_scores`) is the mean boundary
probability along the contact, except between 2D fragments of adjacent
sections (fragments made per section, as for anisotropic serial-section data).
There the faces join two cell interiors whether or not the fragments belong to
the same neuron, so the boundary mean is near 0 even for a sliver where a
membrane moved between sections.  Such contacts get an overlap term: the
fragments are grouped per section into 2D segments (in-plane contacts with mean
boundary ``<= section_threshold``), the overlap ``O`` of the two 2D segments is
compared with their areas ``a`` and ``b``, and the score becomes
``1 - (1 - mean) * min(1, O / (z_overlap * sqrt(a * b)))``: unchanged for a
large overlap, close to 1 for a sliver.

:func:`segment_table` turns the prefix of merges with score ``<= threshold``
into a table, so moving a threshold slider never re-runs the agglomeration.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .fragments import make_fragments, validate_boundaries, validate_voxel_size
from .region_graph import RegionGraph, build_region_graph

__all__ = [
    "SECTION_THRESHOLD",
    "Z_OVERLAP",
    "MergeTree",
    "agglomerate",
    "apply_table",
    "edge_merge_scores",
    "section_links",
    "segment_boundaries",
    "segment_table",
]

#: Geometric-mean overlap ratio ``O / sqrt(a * b)`` of two 2D segments in
#: adjacent sections at and above which their contact keeps its plain boundary
#: score (below it the score rises towards 1).  Chosen on phantoms and ISBI
#: sections 0-19 with several stand-in boundary maps
#: (``scripts/tune_agglomeration.py``).
Z_OVERLAP = 0.5

#: In-plane mean boundary up to which fragments of one section are grouped into
#: the 2D segments whose overlaps score between-section contacts.
SECTION_THRESHOLD = 0.4


@dataclass
class MergeTree:
    """The full merge order of an agglomeration.

    Merge ``i`` joins the region whose smallest fragment id is ``merge_a[i]``
    with the region whose smallest fragment id is ``merge_b[i]``
    (``merge_a[i] < merge_b[i]``); after it, the merged region's smallest id is
    ``merge_a[i]``.  Replaying merges ``0..k-1`` through union-find gives the
    segmentation at any threshold between ``merge_score[k-1]`` and
    ``merge_score[k]``.

    Parameters
    ----------
    merge_a, merge_b : numpy.ndarray
        ``(M,)`` ``uint64`` smallest fragment ids of the two merged regions.
    merge_score : numpy.ndarray
        ``(M,)`` ``float64`` merge scores, non-decreasing.
    merge_area : numpy.ndarray
        ``(M,)`` ``float64`` total contact weight between the two regions when
        they merged (nm^2 when the graph was built with a voxel size, else
        voxel faces).
    n_fragments : int
        Largest fragment id ``N``.
    """

    merge_a: np.ndarray
    merge_b: np.ndarray
    merge_score: np.ndarray
    merge_area: np.ndarray
    n_fragments: int

    def __len__(self) -> int:
        """Return the number of merges."""
        return len(self.merge_score)

    def n_merges(self, threshold: float) -> int:
        """Return how many merges have a score ``<= threshold``.

        Parameters
        ----------
        threshold : float
            Merge-score threshold.

        Returns
        -------
        int
            Length of the merge prefix applied at ``threshold``.
        """
        return int(np.searchsorted(self.merge_score, threshold, side="right"))

    def table(self, threshold: float) -> np.ndarray:
        """Fragment-to-segment table at ``threshold`` (see :func:`segment_table`).

        Parameters
        ----------
        threshold : float
            Merge-score threshold.

        Returns
        -------
        numpy.ndarray
            ``(n_fragments + 1,)`` table with consecutive segment ids.
        """
        return segment_table(self, self.n_fragments, threshold)


def section_links(graph: RegionGraph) -> np.ndarray:
    """Tell which edges join 2D fragments of two different (adjacent) sections.

    A fragment is 2D when its bounding box is one section thick, as every
    fragment of :func:`~napari_connectome.core.fragments.make_fragments` is
    when it works per section (anisotropic data).

    Parameters
    ----------
    graph : RegionGraph
        Region graph of a 3D volume (2D graphs have no such edges).

    Returns
    -------
    numpy.ndarray
        ``(E,)`` bool, True for edges between two 2D fragments of different
        sections.
    """
    n_edges = len(graph.edges)
    box = np.asarray(graph.fragment_bboxes)
    if n_edges == 0 or box.ndim != 2 or box.shape[1] != 6:
        return np.zeros(n_edges, dtype=bool)
    flat = (box[:, 3] - box[:, 0]) == 1
    z0 = box[:, 0]
    u = graph.edges[:, 0].astype(np.intp)
    v = graph.edges[:, 1].astype(np.intp)
    return flat[u] & flat[v] & (z0[u] != z0[v])


def _merge_sums(
    graph: RegionGraph, z_overlap: float | None, section_threshold: float
) -> np.ndarray:
    """Per-edge ``score * contact_weight`` (``score_sum`` where unchanged)."""
    sums = np.asarray(graph.score_sum, dtype=np.float64)
    if z_overlap is None or z_overlap == 0:
        return sums
    if not np.isfinite(z_overlap) or z_overlap < 0:
        raise ValueError(f"z_overlap must be positive (or None to disable); got {z_overlap}")
    if not 0.0 <= section_threshold <= 1.0:
        raise ValueError(f"section_threshold must be in [0, 1]; got {section_threshold}")
    links = section_links(graph)
    if not links.any():
        return sums
    weight = np.asarray(graph.contact_weight, dtype=np.float64)
    mean = sums / np.where(weight > 0, weight, 1.0)
    n = graph.n_fragments
    box = np.asarray(graph.fragment_bboxes)
    u = graph.edges[:, 0].astype(np.intp)
    v = graph.edges[:, 1].astype(np.intp)
    # 2D segments: fragments of one section joined by low in-plane contacts.
    flat = (box[:, 3] - box[:, 0]) == 1
    inplane = flat[u] & flat[v] & (box[u, 0] == box[v, 0]) & (mean <= section_threshold)
    adjacency = coo_matrix(
        (np.ones(np.count_nonzero(inplane), dtype=np.int8), (u[inplane], v[inplane])),
        shape=(n + 1, n + 1),
    )
    n_seg, seg = connected_components(adjacency, directed=False)
    area = np.bincount(seg, weights=graph.fragment_sizes, minlength=n_seg)
    sa, sb = seg[u[links]], seg[v[links]]
    key = np.minimum(sa, sb).astype(np.int64) * n_seg + np.maximum(sa, sb)
    _, inv = np.unique(key, return_inverse=True)
    overlap = np.bincount(inv, weights=graph.contact_area[links])[inv]
    denom = z_overlap * np.sqrt(area[sa] * area[sb])
    ratio = np.minimum(overlap / np.where(denom > 0, denom, 1.0), 1.0)
    score = 1.0 - (1.0 - np.clip(mean[links], 0.0, 1.0)) * ratio
    sums = sums.copy()
    sums[links] = score * weight[links]
    return sums


def edge_merge_scores(
    graph: RegionGraph,
    *,
    z_overlap: float | None = Z_OVERLAP,
    section_threshold: float = SECTION_THRESHOLD,
) -> np.ndarray:
    """Per-edge merge scores used by :func:`agglomerate`, in [0, 1].

    The mean boundary probability along each contact, except for contacts
    between 2D fragments of adjacent sections (see :func:`section_links`):
    with ``O`` the overlap (voxel faces) of the two fragments' 2D segments
    (fragments of one section joined by in-plane contacts with mean boundary
    ``<= section_threshold``) and ``a``, ``b`` their areas (voxels), the score
    is ``1 - (1 - mean) * min(1, O / (z_overlap * sqrt(a * b)))``.  A large
    overlap keeps the boundary mean; a sliver where a membrane moved between
    sections scores close to 1.

    Parameters
    ----------
    graph : RegionGraph
        Region graph of the fragments.
    z_overlap : float or None, optional
        Overlap ratio ``O / sqrt(a * b)`` from which a between-section contact
        keeps its plain boundary score; None or 0 scores every contact by its
        boundary mean alone.
    section_threshold : float, optional
        In-plane mean boundary up to which fragments of a section form one 2D
        segment for the overlap.

    Returns
    -------
    numpy.ndarray
        ``(E,)`` float64 scores.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_connectome.core.region_graph import build_region_graph
    >>> frags = np.zeros((2, 4, 16), np.uint64)
    >>> frags[0, :, :8], frags[0, :, 8:] = 1, 2  # two cells in section 0
    >>> frags[1, :, :10], frags[1, :, 10:] = 3, 4  # the membrane moved by 2 px
    >>> bnd = np.zeros(frags.shape, np.float32)
    >>> bnd[0, :, 7:9] = bnd[1, :, 9:11] = 1.0
    >>> g = build_region_graph(frags, bnd)
    >>> g.edges.tolist()
    [[1, 2], [1, 3], [2, 3], [2, 4], [3, 4]]
    >>> g.mean_score.round(2).tolist()
    [1.0, 0.06, 0.5, 0.08, 1.0]
    >>> edge_merge_scores(g).round(2).tolist()  # the 2-3 sliver now scores high
    [1.0, 0.06, 0.78, 0.08, 1.0]
    """
    weight = np.asarray(graph.contact_weight, dtype=np.float64)
    sums = _merge_sums(graph, z_overlap, section_threshold)
    return sums / np.where(weight > 0, weight, 1.0)


def agglomerate(
    graph: RegionGraph,
    *,
    z_overlap: float | None = Z_OVERLAP,
    section_threshold: float = SECTION_THRESHOLD,
) -> MergeTree:
    """Merge all connected fragments by average boundary probability.

    Parameters
    ----------
    graph : RegionGraph
        Region graph of the fragments (uses ``edges``, ``contact_weight`` and
        ``score_sum``; for between-section contacts also ``contact_area``,
        ``fragment_sizes`` and ``fragment_bboxes``).
    z_overlap : float or None, optional
        Overlap ratio from which a contact between 2D fragments of adjacent
        sections keeps its plain boundary score (see
        :func:`edge_merge_scores`); None or 0: boundary mean only.
    section_threshold : float, optional
        In-plane mean boundary up to which fragments of a section are grouped
        for that overlap.

    Returns
    -------
    MergeTree
        Every merge until each connected component of the graph is one region,
        in order of non-decreasing score (ties broken by edge order, so the
        result is deterministic).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_connectome.core.region_graph import build_region_graph
    >>> frags = np.array([[1, 2, 3]], dtype=np.uint64)
    >>> bnd = np.array([[0.1, 0.2, 0.9]], dtype=np.float32)
    >>> tree = agglomerate(build_region_graph(frags, bnd))
    >>> tree.merge_a.tolist(), tree.merge_b.tolist()
    ([1, 1], [2, 3])
    """
    n = graph.n_fragments
    edges = graph.edges.astype(np.int64)
    areas = np.asarray(graph.contact_weight, dtype=np.float64)
    if areas.size and not np.all(areas > 0):
        raise ValueError("graph.contact_weight must be positive for every edge")
    sums = _merge_sums(graph, z_overlap, section_threshold)
    # Edge records in parallel lists; adjacency maps neighbour -> edge index.
    # The queue holds lazy lower bounds: every live edge has a pending entry
    # (its last push) with a score <= its current score; an entry that pops
    # with an outdated score is pushed again with the current one.
    eu = edges[:, 0].tolist()
    ev = edges[:, 1].tolist()
    esum = sums.tolist()
    ewt = areas.tolist()
    m = len(eu)
    alive = [True] * m
    adj: list[dict | None] = [{} for _ in range(n + 1)]
    for i in range(m):
        u, v = eu[i], ev[i]
        j = adj[u].get(v)
        if u == v or j is not None:  # self-loop or duplicate pair: fold it in
            if j is not None:
                esum[j] += esum[i]
                ewt[j] += ewt[i]
            alive[i] = False
            continue
        adj[u][v] = i
        adj[v][u] = i
    pushed = [esum[i] / ewt[i] for i in range(m)]
    # Initial entries come from one sorted array; only updates use the heap.
    live = np.flatnonzero(alive)
    init_score = np.asarray(pushed)[live] if m else np.zeros(0)
    order = np.lexsort((live, init_score))
    init_s = init_score[order].tolist()
    init_i = live[order].tolist()
    n_init = len(init_i)
    pos = 0
    heap: list[tuple[float, int]] = []
    min_id = list(range(n + 1))
    out_a: list[int] = []
    out_b: list[int] = []
    out_s: list[float] = []
    out_area: list[float] = []
    heappop, heappush = heapq.heappop, heapq.heappush
    while True:
        if heap and (pos == n_init or heap[0][0] < init_s[pos]):
            score, i = heappop(heap)
        elif pos < n_init:
            score, i = init_s[pos], init_i[pos]
            pos += 1
        else:
            break
        if not alive[i]:
            continue
        current = esum[i] / ewt[i]
        if current != score:
            heappush(heap, (current, i))
            pushed[i] = current
            continue
        alive[i] = False
        u, v = eu[i], ev[i]
        a, b = min_id[u], min_id[v]
        if a > b:
            a, b = b, a
        out_a.append(a)
        out_b.append(b)
        out_s.append(score)
        out_area.append(ewt[i])
        du, dv = adj[u], adj[v]
        if len(du) < len(dv):  # merge the smaller adjacency into the larger
            u, v, du, dv = v, u, dv, du
        min_id[u] = a
        del du[v]
        for w, j in dv.items():
            if w == u:
                continue
            dw = adj[w]
            del dw[v]
            k = du.get(w)
            if k is None:  # the edge now joins u and w
                du[w] = j
                dw[u] = j
                if eu[j] == v:
                    eu[j] = u
                else:
                    ev[j] = u
            else:  # average linkage: pool the two contacts
                esum[k] += esum[j]
                ewt[k] += ewt[j]
                alive[j] = False
                new = esum[k] / ewt[k]
                if new < pushed[k]:
                    heappush(heap, (new, k))
                    pushed[k] = new
        adj[v] = None
    scores = np.asarray(out_s, dtype=np.float64)
    if scores.size:
        # Guard against last-bit rounding: the order is monotone by construction.
        scores = np.maximum.accumulate(scores)
    return MergeTree(
        merge_a=np.asarray(out_a, dtype=np.uint64),
        merge_b=np.asarray(out_b, dtype=np.uint64),
        merge_score=scores,
        merge_area=np.asarray(out_area, dtype=np.float64),
        n_fragments=n,
    )


def segment_table(tree: MergeTree, n_fragments: int, threshold: float) -> np.ndarray:
    """Fragment-to-segment lookup table at a merge-score threshold.

    Applies the merges with score ``<= threshold``.  Segment ids are
    consecutive ``1..K``, ordered by the smallest fragment id in each segment
    (so fragment 1 is always in segment 1); ``table[0] == 0``.

    Parameters
    ----------
    tree : MergeTree
        Merge order from :func:`agglomerate`.
    n_fragments : int
        Largest fragment id ``N`` (the table has ``N + 1`` entries).
    threshold : float
        Merge-score threshold; ``-inf`` keeps every fragment apart, ``inf``
        merges every connected component of the region graph.

    Returns
    -------
    numpy.ndarray
        ``(N + 1,)`` table, ``uint32`` when ``N < 2**32`` else ``uint64``.

    Examples
    --------
    >>> import numpy as np
    >>> tree = MergeTree(np.array([1, 1], np.uint64), np.array([3, 2], np.uint64),
    ...                  np.array([0.1, 0.6]), np.array([4, 2]), 3)
    >>> segment_table(tree, 3, 0.5).tolist()
    [0, 1, 2, 1]
    """
    n = int(n_fragments)
    if n < tree.n_fragments:
        raise ValueError(f"n_fragments={n} is smaller than the tree's {tree.n_fragments}")
    k = tree.n_merges(threshold)
    # Each region's smallest id is absorbed (as merge_b) at most once, into a
    # smaller id: parent pointers form a forest rooted at segment minima.
    parent = np.arange(n + 1, dtype=np.int64)
    parent[tree.merge_b[:k].astype(np.int64)] = tree.merge_a[:k].astype(np.int64)
    while True:  # pointer jumping: O(log depth) vectorised passes
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        parent = grand
    is_root = parent == np.arange(n + 1)
    is_root[0] = False
    rank = np.cumsum(is_root, dtype=np.int64)
    dtype = np.uint32 if n < 2**32 else np.uint64
    table = rank[parent].astype(dtype)
    table[0] = 0
    return table


def apply_table(table: np.ndarray, fragments: np.ndarray) -> np.ndarray:
    """Relabel fragments to segments: ``table[fragments]``.

    Parameters
    ----------
    table : numpy.ndarray
        Fragment-to-segment table (``table[0]`` should be 0).
    fragments : numpy.ndarray
        Fragment ids, any shape.

    Returns
    -------
    numpy.ndarray
        Segment ids, same shape as ``fragments``; ``uint32`` when the
        largest segment id fits, else ``uint64``.
    """
    table = np.asarray(table)
    top = int(table.max()) if table.size else 0
    dtype = np.uint32 if top < 2**32 else np.uint64
    if table.dtype != dtype:
        table = table.astype(dtype)
    frag = np.asarray(fragments)
    if frag.dtype == np.uint64:
        frag = frag.view(np.int64)  # ids < len(table): same bits, faster take
    return np.take(table, frag)


def segment_boundaries(
    boundaries,
    voxel_size=None,
    threshold: float = 0.5,
    mask=None,
    **fragment_kwargs,
) -> tuple[np.ndarray, RegionGraph, MergeTree, np.ndarray]:
    """Run fragments, region graph, agglomeration and thresholding in one call.

    Parameters
    ----------
    boundaries : array_like
        Boundary probabilities in [0, 1] (1 = membrane), ``(z, y, x)`` or
        ``(y, x)``.
    voxel_size : sequence of float, optional
        Voxel size in nm.
    threshold : float, optional
        Merge-score threshold for the returned segmentation.
    mask : array_like of bool, optional
        Voxels to segment; 0 elsewhere.
    **fragment_kwargs
        Passed to :func:`~napari_connectome.core.fragments.make_fragments`.

    Returns
    -------
    fragments : numpy.ndarray
        ``uint64`` fragment ids.
    graph : RegionGraph
        Region graph of the fragments.
    tree : MergeTree
        Full merge order.
    segmentation : numpy.ndarray
        ``table[fragments]`` at ``threshold`` (``uint32`` when ids fit).
    """
    bnd = validate_boundaries(boundaries)
    vs = validate_voxel_size(voxel_size, bnd.ndim)
    fragments = make_fragments(bnd, vs, mask=mask, **fragment_kwargs)
    n = int(fragments.max())
    graph = build_region_graph(fragments, bnd, vs, n_fragments=n)
    tree = agglomerate(graph)
    table = segment_table(tree, n, threshold)
    return fragments, graph, tree, apply_table(table, fragments)


class ThresholdedSegmentation:
    """Mixin: the segmentation at any threshold of an object with ``tree`` and ``fragments``.

    Used by the in-memory :class:`~napari_connectome.segmentation.SegmentationResult`
    and the stored :class:`~napari_connectome.io.segmentation_store.StoredSegmentation`,
    whose ``fragments`` may be a numpy or a zarr array.
    """

    def table_at(self, threshold: float) -> np.ndarray:
        """Return the fragment-to-segment table at a merge-score threshold.

        Parameters
        ----------
        threshold : float
            Merges with a score at or below it are applied.

        Returns
        -------
        numpy.ndarray
            ``table[fragment_id] = segment_id``; ``table[0] = 0``.
        """
        return segment_table(self.tree, self.tree.n_fragments, threshold)

    def segmentation_at(self, threshold: float) -> np.ndarray:
        """Return segment ids of every voxel at a merge-score threshold.

        Parameters
        ----------
        threshold : float
            Merges with a score at or below it are applied.

        Returns
        -------
        numpy.ndarray
            Segment ids, the volume's shape (``uint32`` when they fit); a
            stored volume's fragments are read in full.
        """
        return apply_table(self.table_at(threshold), np.asarray(self.fragments[...]))
