"""Cuts of a segment's fragment graph proposed as splits: dendrogram cuts and bottlenecks.

:func:`propose_cuts` re-agglomerates a segment's fragment graph by average
linkage and proposes, for the last merges and for earlier merges of two large
clusters, the cut between the two merged clusters; plus the split into
connected components, and the spectral cut below.

Average-linkage agglomeration merges fragments bottom-up, so a false merge made
early (a few confident contacts between two neurons, many fragments on either
side) hides deep in a segment's dendrogram.  :func:`spectral_cut` looks at the
segment as a whole instead: the Fiedler vector of the normalised Laplacian of
its fragment graph (edge weight: contact area times affinity, ``1 - score``)
orders the fragments, and the sweep cut of least conductance along that order
is the narrowest bridge between two large parts (a normalised cut).

Pure numpy/scipy: no Qt, no napari, no torch.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .agglomeration import agglomerate
from .region_graph import RegionGraph

__all__ = ["propose_cuts", "spectral_cut"]

#: Largest fragment graph solved densely; larger ones use a sparse eigensolver.
_DENSE = 400
#: Fragment graphs larger than this are not cut spectrally (too slow to be interactive).
_MAX_NODES = 20000


def spectral_cut(k: int, iu, iv, weight, min_side: int = 1) -> np.ndarray | None:
    """Return the sweep cut of least conductance along the Fiedler vector.

    Parameters
    ----------
    k : int
        Number of nodes.
    iu, iv : numpy.ndarray
        Node indices of the edges.
    weight : numpy.ndarray
        Non-negative edge weights (contact area times affinity).
    min_side : int, optional
        Fewest nodes on each side.

    Returns
    -------
    numpy.ndarray or None
        ``(k,)`` bool, True on one side of the cut; None when the graph is too
        small, too large, or not connected (components are cut elsewhere).

    Examples
    --------
    >>> import numpy as np
    >>> iu, iv = np.array([0, 1, 2, 3, 4]), np.array([1, 2, 3, 4, 5])
    >>> w = np.array([5.0, 5.0, 0.1, 5.0, 5.0])  # a thin bridge between 2 and 3
    >>> spectral_cut(6, iu, iv, w).tolist()
    [True, True, True, False, False, False]
    """
    iu = np.asarray(iu, dtype=np.int64)
    iv = np.asarray(iv, dtype=np.int64)
    w = np.maximum(np.asarray(weight, dtype=np.float64), 1e-9)
    if k < 3 or k > _MAX_NODES or len(iu) < 2:
        return None
    adj = sparse.coo_matrix(
        (np.concatenate([w, w]), (np.concatenate([iu, iv]), np.concatenate([iv, iu]))),
        shape=(k, k),
    )
    adj = adj.tocsr()
    n_comp, _ = connected_components(adj, directed=False)
    if n_comp > 1:
        return None
    deg = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(deg)
    norm = sparse.diags(inv_sqrt) @ adj @ sparse.diags(inv_sqrt)
    if k <= _DENSE:
        vals, vecs = np.linalg.eigh(norm.toarray())
        vec = vecs[:, -2]  # second largest eigenvalue of D^-1/2 A D^-1/2
    else:
        from scipy.sparse.linalg import eigsh

        try:
            vals, vecs = eigsh(norm, k=2, which="LA", tol=1e-4, maxiter=2000)
        except Exception:  # no convergence: no spectral proposal
            return None
        vec = vecs[:, np.argsort(vals)[0]]
    fiedler = vec * inv_sqrt
    order = np.argsort(fiedler, kind="stable")
    pos = np.empty(k, dtype=np.int64)
    pos[order] = np.arange(k)
    # cut(prefix p) = weight of edges with one end among the first p nodes
    a, b = np.minimum(pos[iu], pos[iv]), np.maximum(pos[iu], pos[iv])
    diff = np.zeros(k + 1)
    np.add.at(diff, a + 1, w)
    np.add.at(diff, b + 1, -w)
    cut = np.cumsum(diff)[1:k]  # prefixes of 1..k-1 nodes
    vol = np.cumsum(deg[order])[: k - 1]
    total = deg.sum()
    conductance = cut / np.maximum(np.minimum(vol, total - vol), 1e-12)
    sizes = np.arange(1, k)
    ok = (sizes >= min_side) & (k - sizes >= min_side)
    if not ok.any():
        return None
    conductance[~ok] = np.inf
    p = int(np.argmin(conductance)) + 1
    side = np.zeros(k, dtype=bool)
    side[order[:p]] = True
    return side


def _entropy(a: float, b: float) -> float:
    t = a + b
    return float(sum(x * np.log2(t / x) for x in (a, b) if x > 0))


def propose_cuts(k, iu, iv, weight, score, area, sizes, config, link_prior) -> list[tuple]:
    """Propose two-way cuts of one segment's fragment graph.

    Parameters
    ----------
    k : int
        Fragments of the segment (nodes ``0..k-1``).
    iu, iv : numpy.ndarray
        Node indices of the edges inside the segment.
    weight, score, area : numpy.ndarray
        Contact weight, merge score and contact area (faces) of each edge.
    sizes : numpy.ndarray
        Voxels of each node.
    config : CandidateConfig
        ``split_last``, ``split_balance``, ``tiny``, ``split_depth`` and
        ``spectral``.
    link_prior : callable
        ``link_prior(score)``: how likely a merge at that linkage score is wrong
        (ranks the dendrogram cuts with the cut's importance).

    Returns
    -------
    list of tuple
        ``(link_score, side_a, side_b, source)`` with the sides as lists of
        node indices + 1 and ``source`` in ``{"tree", "components",
        "spectral"}``; the spectral cut's link score is -1 (the caller scores it).
    """
    sub = RegionGraph(
        edges=np.stack([iu + 1, iv + 1], axis=1).astype(np.uint64),
        contact_area=np.asarray(area, dtype=np.int64),
        contact_weight=weight,
        score_sum=score * weight,
        max_score=score.astype(np.float32),
        quantile_score=score.astype(np.float32),
        fragment_sizes=np.zeros(k + 1, np.int64),
        fragment_bboxes=np.zeros((k + 1, 2), np.int64),
    )
    tree = agglomerate(sub, z_overlap=None) if len(iu) else None
    m = 0 if tree is None else len(tree)
    total = int(sizes.sum())
    # replay the merges with member lists: the sides of each proposed cut
    members = {i: [i] for i in range(1, k + 1)}
    wanted_from = max(m - config.split_last, 0)
    side_size = np.concatenate([[0], sizes]).astype(np.float64)
    balanced = max(config.tiny, config.split_balance * total)
    cuts = []
    for i in range(m):
        a, b = int(tree.merge_a[i]), int(tree.merge_b[i])
        if i >= wanted_from or min(side_size[a], side_size[b]) >= balanced:
            cuts.append((float(tree.merge_score[i]), members[a][:], members[b][:], "tree"))
        side_size[a] += side_size[b]
        ma, mb = members.pop(a), members.pop(b)
        if len(ma) < len(mb):
            ma, mb = mb, ma
        ma.extend(mb)
        members[a] = ma
    disconnected = len(members) > 1
    if disconnected:  # components the graph never joins: cut off all but the largest
        comps = sorted(members.values(), key=lambda c: -sizes[np.array(c) - 1].sum())
        rest = [x for c in comps[1:] for x in c]
        cuts.append((1.0, comps[0], rest, "components"))
    if len(cuts) > config.split_depth:  # the most promising: prior x importance

        def promise(cut):
            small = min(
                int(sizes[np.asarray(cut[1]) - 1].sum()), int(sizes[np.asarray(cut[2]) - 1].sum())
            )
            return link_prior(cut[0]) * _entropy(small, total - small)

        keep = sorted(range(len(cuts)), key=lambda j: -promise(cuts[j]))[: config.split_depth]
        cuts = [cuts[j] for j in sorted(keep)]
    if config.spectral and not disconnected:
        side = spectral_cut(k, iu, iv, weight * (1.0 - score), min_side=1)
        if side is not None:
            idx = np.arange(1, k + 1)
            cuts.append((-1.0, idx[side].tolist(), idx[~side].tolist(), "spectral"))
    return cuts
