"""Scores of synapse detection and partner assignment.

Detection: detections and truth synapses are matched one to one (Hungarian
assignment, :func:`scipy.optimize.linear_sum_assignment`, minimising the total
distance) among the pairs closer than ``distance_nm`` (default 200 nm, as
CREMI uses for clefts); matched detections are true positives. Partner
accuracy: among the true-positive synapses, the share whose presynaptic
segment and set of postsynaptic segments are both right.

Pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = [
    "detection_scores",
    "match_synapses",
    "partner_accuracy",
    "partners_by_synapse",
    "pooled_partner_accuracy",
    "synapse_positions",
    "synapse_regions",
    "truth_partner_rows",
]


def synapse_regions(annotation) -> np.ndarray:
    """Label the face-connected regions of a synapse annotation.

    Real annotations mark synapses as a 0/1 mask (VNC) or as 8-bit ids that cut one
    synaptic region into touching pieces (ISBI 2012: cleft membrane and the cytoplasm
    beside it); either way a synapse is one connected region of nonzero voxels.

    Parameters
    ----------
    annotation : array-like
        Nonzero where a synapse is (2D or 3D).

    Returns
    -------
    numpy.ndarray
        ``int32`` region ids, 0 outside.
    """
    mask = np.asarray(annotation) > 0
    return ndi.label(mask, structure=ndi.generate_binary_structure(mask.ndim, 1))[0]


def synapse_positions(synapses, voxel_size=None) -> np.ndarray:
    """Centres in nm of synapse objects given in any of the usual forms.

    Parameters
    ----------
    synapses : numpy.ndarray or SynapseDetections or SynapseTable
        An id volume (each nonzero id one synapse; centres = mean voxel positions),
        an ``(n, ndim)`` array of positions in nm, or an object with ``positions``.
    voxel_size : sequence of float, optional
        Needed for an id volume.

    Returns
    -------
    numpy.ndarray
        ``(n, ndim)`` positions in nm.
    """
    if hasattr(synapses, "positions"):
        return np.asarray(synapses.positions, float)
    arr = np.asarray(synapses)
    if arr.ndim == 2 and arr.dtype.kind == "f" and arr.shape[1] in (2, 3):
        return arr.astype(float)
    if arr.ndim not in (2, 3):
        raise ValueError("give synapses as an id volume, positions (n, ndim) or detections")
    if voxel_size is None:
        raise ValueError("an id volume needs its voxel_size to give positions in nm")
    ids = np.unique(arr)
    ids = ids[ids != 0]
    if not ids.size:
        return np.zeros((0, arr.ndim))
    centre = ndi.center_of_mass(np.ones(arr.shape, np.float32), arr, ids)
    return np.array(centre, float).reshape(-1, arr.ndim) * np.asarray(voxel_size, float)


def match_synapses(found, truth, distance_nm: float = 200.0) -> np.ndarray:
    """One-to-one matches of found and true positions closer than ``distance_nm``.

    Parameters
    ----------
    found, truth : numpy.ndarray
        ``(n, d)`` and ``(m, d)`` positions in nm.
    distance_nm : float
        Largest distance of a match.

    Returns
    -------
    numpy.ndarray
        ``(k, 2)`` index pairs ``(found, truth)``, minimising the total distance.
    """
    found, truth = np.asarray(found, float), np.asarray(truth, float)
    if not len(found) or not len(truth):
        return np.zeros((0, 2), np.int64)
    pairs = cKDTree(found).query_ball_tree(cKDTree(truth), distance_nm)
    a = np.array([i for i, js in enumerate(pairs) for _ in js], np.int64)
    b = np.array([j for js in pairs for j in js], np.int64)
    if not a.size:
        return np.zeros((0, 2), np.int64)
    n, m = len(found), len(truth)
    graph = coo_matrix((np.ones(a.size), (a, n + b)), shape=(n + m, n + m))
    _, comp = connected_components(graph, directed=False)
    out = []
    for c in np.unique(comp[a]):  # each group of nearby synapses on its own
        sel = comp[a] == c
        ra, rb = np.unique(a[sel]), np.unique(b[sel])
        cost = np.full((ra.size, rb.size), 1e9)
        ia, ib = np.searchsorted(ra, a[sel]), np.searchsorted(rb, b[sel])
        cost[ia, ib] = np.linalg.norm(found[a[sel]] - truth[b[sel]], axis=1)
        rows, cols = linear_sum_assignment(cost)
        ok = cost[rows, cols] <= distance_nm
        out += list(zip(ra[rows[ok]], rb[cols[ok]], strict=True))
    return np.array(sorted(out), np.int64).reshape(-1, 2)


def detection_scores(found, truth, voxel_size=None, distance_nm: float = 200.0) -> dict:
    """Precision, recall and F1 of synapse detection.

    Parameters
    ----------
    found, truth
        Detections and truth: id volumes, positions in nm or objects with
        ``positions`` (see :func:`synapse_positions`).
    voxel_size : sequence of float, optional
        Voxel size of id volumes.
    distance_nm : float
        Largest distance of a match.

    Returns
    -------
    dict
        ``precision, recall, f1, tp, fp, fn, n_found, n_truth, distance_nm``.
        With no truth and no detection every score is 1.
    """
    p = synapse_positions(found, voxel_size)
    t = synapse_positions(truth, voxel_size)
    tp = len(match_synapses(p, t, distance_nm))
    fp, fn = len(p) - tp, len(t) - tp
    precision = tp / len(p) if len(p) else (1.0 if not len(t) else 0.0)
    recall = tp / len(t) if len(t) else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "n_found": int(len(p)),
        "n_truth": int(len(t)),
        "distance_nm": float(distance_nm),
    }


def truth_partner_rows(table, voxel_size) -> np.ndarray:
    """Convert the phantom's ``synapse_table`` (voxel coordinates) to nm rows.

    Parameters
    ----------
    table : numpy.ndarray
        Rows ``id, z, y, x`` (voxels), ``pre, post``.
    voxel_size : sequence of float
        Voxel size in nm.

    Returns
    -------
    numpy.ndarray
        The same rows with ``z, y, x`` in nm.
    """
    rows = np.array(table, copy=True)
    for axis, name in enumerate(("z", "y", "x")):
        rows[name] = rows[name] * float(voxel_size[axis])
    return rows


def partners_by_synapse(rows) -> tuple[np.ndarray, list, list]:
    """Group partner rows (one per synapse and postsynaptic partner) by synapse.

    Parameters
    ----------
    rows : numpy.ndarray
        Rows ``id, z, y, x`` (nm), ``pre, post``.

    Returns
    -------
    tuple
        ``(positions, pre, post)`` in increasing id order: ``(n, 3)`` positions, the
        presynaptic id of each synapse and the frozenset of its postsynaptic ids
        (without 0).
    """
    ids = np.unique(rows["id"])
    pos, pre, post = [], [], []
    for i in ids:
        sel = rows[rows["id"] == i]
        pos.append([sel["z"][0], sel["y"][0], sel["x"][0]])
        pre.append(int(sel["pre"][0]))
        post.append(frozenset(int(q) for q in sel["post"] if q != 0))
    return np.array(pos, float).reshape(-1, 3), pre, post


def partner_accuracy(found_rows, truth_rows, distance_nm: float = 200.0) -> dict:
    """Partner accuracy of the true-positive synapses.

    Parameters
    ----------
    found_rows, truth_rows : numpy.ndarray
        Rows ``id, z, y, x`` (nm), ``pre, post`` (one per synapse and postsynaptic
        partner), e.g. ``SynapseTable.rows()`` and :func:`truth_partner_rows`. A
        :class:`~napari_connectome.core.synapses.SynapseTable` is accepted too.
    distance_nm : float
        Largest distance of a detection match.

    Returns
    -------
    dict
        ``accuracy`` (pre right and post set exactly right), ``pre_accuracy``,
        ``post_precision`` and ``post_recall`` (over partner pairs of matched
        synapses), ``matched`` (true positives).
    """
    if hasattr(found_rows, "rows"):
        found_rows = found_rows.rows()
    fp, fpre, fpost = partners_by_synapse(np.asarray(found_rows))
    tp_, tpre, tpost = partners_by_synapse(np.asarray(truth_rows))
    matches = match_synapses(fp, tp_, distance_nm)
    if not len(matches):
        return {
            "accuracy": 0.0,
            "pre_accuracy": 0.0,
            "post_precision": 0.0,
            "post_recall": 0.0,
            "matched": 0,
        }
    right = pre_right = hit = n_found = n_true = 0
    for i, j in matches:
        pre_ok = fpre[i] == tpre[j]
        pre_right += pre_ok
        right += pre_ok and fpost[i] == tpost[j]
        hit += len(fpost[i] & tpost[j])
        n_found += len(fpost[i])
        n_true += len(tpost[j])
    k = len(matches)
    return {
        "accuracy": right / k,
        "pre_accuracy": pre_right / k,
        "post_precision": hit / n_found if n_found else 0.0,
        "post_recall": hit / n_true if n_true else 0.0,
        "matched": int(k),
    }


def pooled_partner_accuracy(scores) -> dict:
    """Pool the partner accuracies of several volumes, weighting each by its matches.

    Parameters
    ----------
    scores : iterable of dict
        :func:`partner_accuracy` results.

    Returns
    -------
    dict
        ``accuracy`` and ``pre_accuracy`` over all true-positive synapses together,
        and ``matched`` (their number).
    """
    scores = list(scores)
    matched = sum(s["matched"] for s in scores)
    right = sum(s["accuracy"] * s["matched"] for s in scores)
    pre_right = sum(s["pre_accuracy"] * s["matched"] for s in scores)
    return {
        "accuracy": right / matched if matched else 0.0,
        "pre_accuracy": pre_right / matched if matched else 0.0,
        "matched": matched,
    }
