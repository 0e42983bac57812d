"""Stitch the finished blocks of a blockwise run: the global graph and fragment ids.

The driver side of :mod:`napari_connectome.blockwise`: :func:`load_graph` reads every
block's mark from the work folder (see :mod:`napari_connectome.blockwise_work`),
computes the edges across block faces, joins the pieces of fragments that faces cut
(:mod:`napari_connectome.core.stitching`), and :class:`GlobalFragments` reads the
scratch fragments with their final ids while the store is written.
"""

from __future__ import annotations

import numpy as np

from .blockwise_work import GRAPH_FIELDS, BlockwisePlan, mark_path
from .core.stitching import (
    Block,
    face_contacts,
    join_fragments,
    match_face_fragments,
    merge_block_graphs,
)

__all__ = ["GlobalFragments", "load_graph"]


def load_graph(plan: BlockwisePlan, blocks: list[Block]):
    """Stitch the finished blocks' graphs into the global region graph.

    Parameters
    ----------
    plan : BlockwisePlan
        The run (every block must be done).
    blocks : list of Block
        All blocks, in grid order (that order assigns the ids).

    Returns
    -------
    graph : RegionGraph
        The global graph (block-local ids shifted by the blocks before).
    offsets : numpy.ndarray
        ``(len(blocks),)`` id offset of each block: block-local id ``i`` is
        stitched id ``i + offset``.
    table : numpy.ndarray
        Stitched id -> final id (the pieces of fragments cut by faces joined).
    """
    marks = [np.load(mark_path(plan, b)) for b in blocks]
    counts = np.array([m["fragment_sizes"].size - 1 for m in marks], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    where = {b.index: k for k, b in enumerate(blocks)}
    vs = np.asarray(plan.voxel_size, dtype=float)
    faces, pairs = [], []
    for k, block in enumerate(blocks):
        for axis in range(len(block.index)):
            upper = list(block.index)
            upper[axis] += 1
            j = where.get(tuple(upper))
            if j is None:
                continue
            low = _global(marks[k][f"hi{axis}_ids"], offsets[k])
            high = _global(marks[j][f"lo{axis}_ids"], offsets[j])
            area = float(np.prod(np.delete(vs, axis)))
            faces.append(
                face_contacts(low, high, marks[k][f"hi{axis}_q"], marks[j][f"lo{axis}_q"], area)
            )
            same = match_face_fragments(
                marks[k][f"hi{axis}_ids"],
                marks[k][f"hi{axis}_seen"],
                marks[j][f"lo{axis}_ids"],
                marks[j][f"lo{axis}_seen"],
            )
            pairs.append(same + np.array([offsets[k], offsets[j]], dtype=np.int64))
    pieces = [
        {"origin": tuple(m["origin"].tolist()), **{f: m[f] for f in GRAPH_FIELDS}} for m in marks
    ]
    graph = merge_block_graphs(pieces, faces)
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    graph, table = join_fragments(graph, pairs)
    return graph, offsets, table


def _global(ids: np.ndarray, offset: int) -> np.ndarray:
    ids = ids.astype(np.uint64)
    return np.where(ids > 0, ids + np.uint64(offset), np.uint64(0))


class GlobalFragments:
    """The scratch fragments with global ids, read region by region (for writing the store).

    Parameters
    ----------
    scratch : zarr.Array
        Block-local fragment ids.
    blocks : list of Block
        The grid, in the order of ``offsets``.
    offsets : numpy.ndarray
        Id offset of each block.
    table : numpy.ndarray, optional
        Stitched id -> final id (see :func:`load_graph`).
    """

    dtype = np.dtype(np.uint64)

    def __init__(self, scratch, blocks: list[Block], offsets: np.ndarray, table=None):
        self.table = None if table is None else np.asarray(table, dtype=np.uint64)
        self.scratch = scratch
        self.shape = tuple(scratch.shape)
        self.ndim = len(self.shape)
        self.blocks = blocks
        self.offsets = offsets

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        region = tuple(slice(*k.indices(n)[:2]) for k, n in zip(key, self.shape, strict=True))
        out = np.zeros(tuple(max(0, s.stop - s.start) for s in region), np.uint64)
        for block, offset in zip(self.blocks, self.offsets, strict=True):
            part = tuple(
                slice(max(c.start, r.start), min(c.stop, r.stop))
                for c, r in zip(block.core, region, strict=True)
            )
            if any(p.stop <= p.start for p in part):
                continue
            local = np.asarray(self.scratch[part])
            dest = tuple(
                slice(p.start - r.start, p.stop - r.start)
                for p, r in zip(part, region, strict=True)
            )
            out[dest] = _global(local, int(offset))
        if self.table is not None:
            out = self.table[out.view(np.int64)]
        return out
