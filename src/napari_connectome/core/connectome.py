"""The connectome of a synapse table, and CSV files of both.

The connectome is a weighted directed graph, neuron to neuron: one edge
``pre -> post`` per pair of segments, its weight the number of synapses from
``pre`` onto ``post`` (a polyadic synapse counts once for each of its
postsynaptic partners). Rows whose presynaptic or postsynaptic segment is
unknown (0) or where both are the same segment are left out.

CSV files (plain ``csv`` module; read them with ``pandas.read_csv`` or
``networkx.read_edgelist(path, delimiter=",", nodetype=int, data=[("count", int)])``
after skipping the header):

- edges: ``pre,post,count``;
- synapses: ``id,z,y,x,pre,post,confidence,partner_confidence``, positions in
  nm, the synapse's detection confidence and the pair's, one row per
  (synapse, postsynaptic partner): a synapse with three postsynaptic partners
  has three rows sharing its id; one without any has one row with ``post = 0``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

__all__ = [
    "EDGE_COLUMNS",
    "SYNAPSE_COLUMNS",
    "connectome_edges",
    "connectome_matrix",
    "write_edges_csv",
    "write_synapse_csv",
]

EDGE_COLUMNS = ("pre", "post", "count")
SYNAPSE_COLUMNS = ("id", "z", "y", "x", "pre", "post", "confidence", "partner_confidence")


def _rows_of(table) -> np.ndarray:
    rows = table.rows() if hasattr(table, "rows") else np.asarray(table)
    missing = [c for c in ("pre", "post") if c not in (rows.dtype.names or ())]
    if missing:
        raise ValueError(f"a synapse table needs the fields pre and post; missing {missing}")
    return rows


def connectome_edges(table, min_confidence: float = 0.0) -> np.ndarray:
    """Weighted directed edges ``pre -> post`` of a synapse table.

    Parameters
    ----------
    table : SynapseTable or numpy.ndarray
        A :class:`~napari_connectome.core.synapses.SynapseTable` or its ``rows()``.
    min_confidence : float
        Rows whose ``confidence`` (the synapse's detection confidence) is below this
        are left out.

    Returns
    -------
    numpy.ndarray
        Structured array ``(pre, post, count)`` sorted by decreasing count, then ids.
    """
    rows = _rows_of(table)
    keep = (rows["pre"] != 0) & (rows["post"] != 0) & (rows["pre"] != rows["post"])
    if min_confidence > 0 and "confidence" in rows.dtype.names:
        keep &= rows["confidence"] >= min_confidence
    pairs = np.stack([rows["pre"][keep], rows["post"][keep]], axis=1).astype(np.uint64)
    dtype = [("pre", np.uint64), ("post", np.uint64), ("count", np.int64)]
    if not len(pairs):
        return np.zeros(0, dtype)
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    out = np.zeros(len(unique), dtype)
    out["pre"], out["post"], out["count"] = unique[:, 0], unique[:, 1], counts
    return out[np.lexsort((out["post"], out["pre"], -out["count"]))]


def connectome_matrix(edges, neurons) -> np.ndarray:
    """Synapse counts between chosen neurons as a matrix.

    Parameters
    ----------
    edges : numpy.ndarray
        :func:`connectome_edges` output.
    neurons : sequence of int
        Segment ids, the rows (presynaptic) and columns (postsynaptic) in order.

    Returns
    -------
    numpy.ndarray
        ``(k, k)`` ``int64`` counts, ``[i, j]`` = synapses from ``neurons[i]`` onto
        ``neurons[j]``.
    """
    neurons = np.asarray(neurons, np.uint64).ravel()
    index = {int(n): i for i, n in enumerate(neurons)}
    out = np.zeros((neurons.size, neurons.size), np.int64)
    for pre, post, count in zip(edges["pre"], edges["post"], edges["count"], strict=True):
        i, j = index.get(int(pre)), index.get(int(post))
        if i is not None and j is not None:
            out[i, j] += int(count)
    return out


def write_edges_csv(path, edges) -> Path:
    """Write connectome edges as ``pre,post,count``.

    Parameters
    ----------
    path : str or pathlib.Path
        Destination (overwritten).
    edges : numpy.ndarray
        :func:`connectome_edges` output.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EDGE_COLUMNS)
        for pre, post, count in zip(edges["pre"], edges["post"], edges["count"], strict=True):
            writer.writerow((int(pre), int(post), int(count)))
    return path


def write_synapse_csv(path, table) -> Path:
    """Write a synapse table as ``id,z,y,x,pre,post,confidence,partner_confidence``.

    Positions are in nm; ``confidence`` is the synapse's detection confidence (what
    the Synapses dock's threshold filters on), ``partner_confidence`` that of the
    (pre, post) pair.

    Parameters
    ----------
    path : str or pathlib.Path
        Destination (overwritten).
    table : SynapseTable or numpy.ndarray
        The table or its ``rows()``.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    rows = _rows_of(table)
    names = rows.dtype.names
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SYNAPSE_COLUMNS)
        for r in rows:
            writer.writerow(
                (
                    int(r["id"]),
                    f"{float(r['z']):.1f}",
                    f"{float(r['y']):.1f}",
                    f"{float(r['x']):.1f}",
                    int(r["pre"]),
                    int(r["post"]),
                    f"{float(r['confidence']):.4f}",
                    f"{float(r['partner_confidence']):.4f}"
                    if "partner_confidence" in names
                    else "",
                )
            )
    return path
