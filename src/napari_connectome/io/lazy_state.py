"""A proofreading state over a segmentation store whose volumes stay on disk.

Exporting the proofread labels of a store needs the journal replayed, but not
the volumes in memory: merges, locks, undo and redo change only the
fragment-to-segment table, and a split reads the fragments and boundaries of
the cut segment's box only.  :func:`lazy_state_from_store` builds a
:class:`~napari_connectome.core.proofreading.ProofreadingState` whose
``fragments`` is a :class:`PatchedVolume` (the stored zarr array, read box by
box, with the voxels that splits rewrote kept in memory) and whose
``boundaries`` is a :class:`ScaledVolume` (the stored ``uint8`` map read as
``float32`` probabilities box by box).  Memory then scales with the tables
(region graph, merge tree, segment table) and the edited boxes, not with the
volume; ``state.labels_in(box)`` reads one box.

Pure numpy and zarr: no Qt, no napari, no torch.

Examples
--------
>>> corrected = open_corrected("out.zarr")  # doctest: +SKIP
>>> box = (slice(0, 64), slice(0, 256), slice(0, 256))
>>> block = corrected.state.labels_in(box)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.proofreading import ProofreadingState

__all__ = [
    "CorrectedStore",
    "PatchedVolume",
    "ScaledVolume",
    "full_key",
    "lazy_state_from_store",
    "open_corrected",
]


def full_key(key, ndim: int) -> tuple:
    """Return an index key as one entry per axis: ``...`` expanded, missing axes ``:``.

    Parameters
    ----------
    key : object
        What ``volume[key]`` was given.
    ndim : int
        Number of axes of the volume.

    Returns
    -------
    tuple
        ``ndim`` entries.

    Raises
    ------
    IndexError
        With more than one ellipsis, or more entries than axes.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis")
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    if len(key) > ndim:
        raise IndexError(f"too many indices for a {ndim}D volume")
    return key + (slice(None),) * (ndim - len(key))


def _box(key, shape) -> tuple[slice, ...] | None:
    """Normalise a key of slices (or a shorter tuple) to full slices; None if not slices."""
    if not isinstance(key, tuple):
        key = (key,)
    if not all(isinstance(k, slice) or k is Ellipsis for k in key):
        return None
    key = full_key(key, len(shape))
    out = []
    for k, n in zip(key, shape, strict=True):
        start, stop, step = k.indices(n)
        if step != 1:
            raise IndexError("a lazily read volume takes slices with step 1 only")
        out.append(slice(start, max(start, stop)))
    return tuple(out)


class _WriteThrough(np.ndarray):
    """A box read from a :class:`PatchedVolume`; assignments to it reach the volume.

    Only the array returned by the volume's ``__getitem__`` writes through;
    arrays derived from it (slices, ``astype``, arithmetic) are plain copies
    or views that do not.
    """

    def __array_finalize__(self, obj):
        self._sink = None

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        sink = getattr(self, "_sink", None)
        if sink is None:
            return
        volume, start = sink
        local = np.arange(self.size, dtype=np.int64).reshape(self.shape)[key]
        local = np.asarray(local).reshape(-1)
        if not local.size:
            return
        coords = np.unravel_index(local, self.shape)
        values = np.asarray(self).reshape(-1)[local]
        glob = tuple(c + a for c, a in zip(coords, start, strict=True))
        volume.write_points(np.ravel_multi_index(glob, volume.shape), values)


class PatchedVolume:
    """An on-disk integer volume read box by box, with voxel writes kept in memory.

    Reads go to the underlying array (zarr, or any array-like with ``shape``
    and slice indexing) and then get the voxels written so far; writes (see
    :meth:`write_points`, or an assignment into a box just read, as
    ``volume[box][coords] = ids`` in a voxel split) are kept as sorted flat
    indices and values.  Memory scales with the largest box read and the
    number of voxels written, never with the volume.

    Parameters
    ----------
    array : array-like
        The volume (2D or 3D, integer), read with tuples of slices.
    dtype : numpy dtype, optional
        Dtype of what reads return; the array's by default.

    Attributes
    ----------
    reads : list of int
        Number of voxels of each read of the underlying array, in order (for
        checks that no read covers more than a block).
    """

    def __init__(self, array, dtype=None):
        self._array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(array.dtype if dtype is None else dtype)
        self._chunks = tuple(
            int(c) for c in (getattr(array, "chunks", None) or (64, 256, 256)[-self.ndim :])
        )
        self._index = np.zeros(0, dtype=np.int64)
        self._values = np.zeros(0, dtype=self.dtype)
        self.reads: list[int] = []

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the underlying array (reads aligned to it are cheapest)."""
        return self._chunks

    @property
    def size(self) -> int:
        """int: Number of voxels."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_written(self) -> int:
        """int: Number of distinct voxels written so far."""
        return len(self._index)

    # ------------------------------------------------------------------- writes
    def write_points(self, index, values) -> None:
        """Set voxels by flat (C-order) index; a later write of a voxel wins.

        Parameters
        ----------
        index : numpy.ndarray
            Flat indices into the volume.
        values : numpy.ndarray
            Their new values (cast to :attr:`dtype`).
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        values = np.broadcast_to(np.asarray(values).astype(self.dtype), index.shape)
        if index.size and (index.min() < 0 or index.max() >= self.size):
            raise IndexError("voxel index outside the volume")
        # the last write of a voxel wins: unique over the reversed concatenation
        both = np.concatenate([self._index, index])[::-1]
        vals = np.concatenate([self._values, values])[::-1]
        self._index, first = np.unique(both, return_index=True)
        self._values = vals[first]

    def _overlay(self, box, block: np.ndarray) -> None:
        """Put the written voxels inside ``box`` into ``block`` (the box's values)."""
        if not len(self._index):
            return
        plane = int(np.prod(self.shape[1:], dtype=np.int64))
        lo, hi = np.searchsorted(self._index, [box[0].start * plane, box[0].stop * plane])
        if lo == hi:
            return
        coords = np.unravel_index(self._index[lo:hi], self.shape)
        inside = np.ones(hi - lo, dtype=bool)
        for c, s in zip(coords[1:], box[1:], strict=True):
            inside &= (c >= s.start) & (c < s.stop)
        if inside.any():
            local = tuple(c[inside] - s.start for c, s in zip(coords, box, strict=True))
            block[local] = self._values[lo:hi][inside]

    # -------------------------------------------------------------------- reads
    def patch(self, box, block: np.ndarray) -> None:
        """Put the voxels written so far into ``block``, the stored values of ``box``.

        A block read with ``read(box, patched=False)`` (and kept) becomes the
        current values of its box: writes since are applied, undone ones too.

        Parameters
        ----------
        box : tuple of slice
            The block's region, steps of 1.
        block : numpy.ndarray
            The block (changed in place).
        """
        box = _box(box, self.shape)
        if box is None:
            raise TypeError("patch() takes a tuple of slices")
        self._overlay(box, block)

    def read(self, box, patched: bool = True) -> np.ndarray:
        """Return the values in a box (a tuple of slices), writes included.

        Parameters
        ----------
        box : tuple of slice
            The region, steps of 1.
        patched : bool, optional
            Apply the voxels written so far (False: the stored values only;
            see :meth:`patch`).

        Returns
        -------
        numpy.ndarray
            A new array of :attr:`dtype`, the box's shape.
        """
        box = _box(box, self.shape)
        if box is None:
            raise TypeError("read() takes a tuple of slices")
        shape = tuple(s.stop - s.start for s in box)
        n = int(np.prod(shape, dtype=np.int64))
        if n:
            self.reads.append(n)
            block = np.asarray(self._array[box]).astype(self.dtype, copy=True)
        else:
            block = np.zeros(shape, dtype=self.dtype)
        if patched:
            self._overlay(box, block)
        return block

    def _points(self, key) -> np.ndarray:
        """Fancy indexing by integer coordinates: read chunk by chunk."""
        arrays = np.broadcast_arrays(*[np.asarray(k) for k in key])
        out_shape = arrays[0].shape
        coords = np.stack([a.reshape(-1).astype(np.int64) for a in arrays], axis=1)
        if coords.size and ((coords < 0).any() or (coords >= np.asarray(self.shape)).any()):
            raise IndexError(f"index outside the volume {self.shape}")
        out = np.zeros(len(coords), dtype=self.dtype)
        if not len(coords):
            return out.reshape(out_shape)
        chunk = coords // np.asarray(self._chunks)
        _, group = np.unique(chunk, axis=0, return_inverse=True)
        group = group.reshape(-1)
        for g in range(int(group.max()) + 1):
            rows = np.flatnonzero(group == g)
            pts = coords[rows]
            lo, hi = pts.min(0), pts.max(0) + 1
            block = self.read(tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True)))
            out[rows] = block[tuple((pts - lo).T)]
        return out.reshape(out_shape)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        box = _box(key, self.shape)
        if box is not None:
            out = self.read(box).view(_WriteThrough)
            out._sink = (self, tuple(s.start for s in box))
            return out
        if len(key) != self.ndim or any(k is Ellipsis or isinstance(k, slice) for k in key):
            raise IndexError(
                "a lazily read volume takes a tuple of slices, or one integer index "
                "(or integer array) per axis"
            )
        if all(np.ndim(k) == 0 for k in key):
            return self._points(key)[()]
        return self._points(key)

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "a PatchedVolume is read box by box; index it with slices instead of "
            "converting the whole volume to an array"
        )

    def __repr__(self) -> str:
        return f"<PatchedVolume {self.shape} {self.dtype}, {self.n_written} voxels written>"


class ScaledVolume:
    """A stored quantised volume read box by box as ``float32``: ``value * scale + offset``.

    The same values as reading the whole volume and converting it (as
    :meth:`~napari_connectome.io.segmentation_store.StoredSegmentation.load_boundaries`
    does), for one box at a time.

    Parameters
    ----------
    array : array-like
        The stored volume (``uint8`` boundaries), read with tuples of slices.
    scale, offset : float
        The conversion.
    """

    def __init__(self, array, scale: float, offset: float = 0.0):
        self._array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self.scale, self.offset = float(scale), float(offset)

    def __getitem__(self, key) -> np.ndarray:
        box = _box(key, self.shape)
        if box is None:
            raise IndexError("a lazily read volume takes a tuple of slices")
        out = np.asarray(self._array[box]).astype(np.float32)
        out *= np.float32(self.scale)
        if self.offset:
            out += np.float32(self.offset)
        return out

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a ScaledVolume is read box by box; index it with slices")


def _journal_segments(records) -> np.ndarray:
    """Every segment id a journal names (edited, merged, locked or produced)."""
    ids = set()
    for r in records:
        for key in ("segment", "segments"):
            value = r.get(key)
            ids.update([value] if isinstance(value, int) else value or [])
        result = r.get("result") or {}
        for value in result.values():
            ids.update([value] if isinstance(value, int) else value or [])
    return np.array(sorted(int(i) for i in ids), dtype=np.uint64)


def _open_without_edges(path: Path, segments=None, threshold=None):
    """Open a segmentation store like ``read_segmentation_store``, without most edges.

    Only the fragments' sizes and boxes of the region graph are read (the
    edges are most of a store's tables and only splits use them), and the
    edges touching a fragment of ``segments`` (ids in the starting table at
    ``threshold``): every segment a journal edits is made of such fragments
    (merges and splits name the segments they join and make), so a replayed
    split sees all the edges it cuts.
    """
    import dataclasses

    import zarr

    from ..core.agglomeration import MergeTree
    from ..core.region_graph import RegionGraph
    from .segmentation_store import (
        STORE_FORMAT,
        STORE_FORMAT_VERSION,
        StoredSegmentation,
        read_segmentation_store,
    )

    try:
        root = zarr.open_group(str(path), mode="r")
        members = set(root.group_keys())
        rg, mt = root["region_graph"], root["merge_tree"]
        rows = {n: np.asarray(rg[n][...]) for n in ("fragment_sizes", "fragment_bboxes")}
        edges = rg["edges"]
        empty = {
            f.name: np.zeros((0, 2) if f.name == "edges" else 0, dtype=rg[f.name].dtype)
            for f in dataclasses.fields(RegionGraph)
            if f.name not in rows and f.name in rg.array_keys()
        }
        if {"region_graph", "merge_tree"} - members or edges.ndim != 2:
            raise KeyError("incomplete")
        tree = MergeTree(
            **{
                n: np.asarray(mt[n][...])
                for n in ("merge_a", "merge_b", "merge_score", "merge_area")
            },
            n_fragments=int(mt.attrs["n_fragments"]),
        )
        attrs = dict(root.attrs)
        if segments is not None and len(segments):
            t = float(attrs["threshold"]) if threshold is None else float(threshold)
            start = StoredSegmentation(path, None, None, None, None, tree, attrs).table_at(t)
            wanted = np.isin(start, segments)
            wanted[0] = False
            ends = np.asarray(edges[...]).astype(np.int64)
            keep = wanted[ends[:, 0]] | wanted[ends[:, 1]]
            del ends
            empty = {n: np.asarray(rg[n][...])[keep] for n in empty}
        graph = RegionGraph(**rows, **empty)
        if attrs.get("format") != STORE_FORMAT or int(attrs.get("format_version", 0)) > (
            STORE_FORMAT_VERSION
        ):
            raise KeyError("not a store of this version")
        volumes = {n: root[n] for n in ("boundaries", "fragments", "segmentation")}
    except Exception:  # anything unusual: the full reader, with its messages
        return read_segmentation_store(path)
    return StoredSegmentation(path=path, graph=graph, tree=tree, attrs=attrs, **volumes)


def _without_edges(graph):
    """Return the region graph's fragment rows without edges (all merges and locks need)."""
    import dataclasses

    empty = {
        f.name: getattr(graph, f.name)[:0].copy()
        for f in dataclasses.fields(graph)
        if f.name not in ("fragment_sizes", "fragment_bboxes")
    }
    return dataclasses.replace(graph, **empty)


def lazy_state_from_store(
    stored, threshold: float | None = None, *, edges: bool = True
) -> ProofreadingState:
    """Build a proofreading state whose fragments and boundaries stay on disk.

    Like :func:`~napari_connectome.io.journal.state_from_store`, but
    ``state.fragments`` is a :class:`PatchedVolume` and ``state.boundaries``
    a :class:`ScaledVolume`: only the tables (region graph, segment table) are
    in memory.  Edits (a replayed journal) give the same table and the same
    voxels as on the in-memory state.  For reading the corrected labels box by
    box (``state.labels_in(box)``); ``labels_in(None)`` is refused.

    Parameters
    ----------
    stored : StoredSegmentation or str or path-like
        An open store, or its path.
    threshold : float, optional
        Threshold of the starting table; the store's by default.
    edges : bool, optional
        Keep the region-graph edges (splits need them). Without them the
        state takes merges, locks, undo and redo only, and holds a fraction
        of the memory (the fragments' sizes and boxes, not the edges);
        ``stored.graph`` is then replaced by its copy without edges.

    Returns
    -------
    ProofreadingState
        The state.
    """
    from .segmentation_store import (
        BOUNDARY_SCALE,
        StoredSegmentation,
        read_segmentation_store,
    )

    if not isinstance(stored, StoredSegmentation):
        stored = read_segmentation_store(stored)
    threshold = stored.threshold if threshold is None else float(threshold)
    nd = len(stored.shape)
    # The state holds its volumes by reference and reads them by box only; it
    # checks for an in-memory array, so it is built on a stand-in and given the
    # lazy volumes afterwards (its tables do not depend on the volumes).
    if not edges:
        stored.graph = _without_edges(stored.graph)  # the edges' memory is freed here
    state = ProofreadingState(
        np.zeros((1,) * nd, dtype=np.uint64),
        stored.graph,
        stored.table_at(threshold),
        voxel_size=stored.voxel_size,
    )
    state.fragments = PatchedVolume(stored.fragments, np.uint64)
    bnd = stored.boundaries
    state.boundaries = ScaledVolume(
        bnd,
        float(bnd.attrs.get("scale", BOUNDARY_SCALE)),
        float(bnd.attrs.get("offset", 0.0)),
    )
    return state


@dataclass
class CorrectedStore:
    """A segmentation store with its journal replayed on a lazy state.

    Attributes
    ----------
    stored : StoredSegmentation
        The open store.
    state : ProofreadingState
        The corrected state (:func:`lazy_state_from_store`, journal replayed).
    edits : int
        Number of journal lines replayed (edits, undos and redos).
    """

    stored: object
    state: ProofreadingState
    edits: int

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the volume."""
        return tuple(self.state.fragments.shape)

    @property
    def labels_dtype(self) -> np.dtype:
        """The dtype an export writes: ``uint32`` unless the ids need ``uint64``."""
        table = self.state.table
        top = int(table.max()) if table.size else 0
        return np.dtype(table.dtype if top > 2**32 - 1 else np.uint32)

    def patched_box(self) -> tuple[slice, ...] | None:
        """Return the bounding box of the voxels the edits rewrote (None when none)."""
        vol = self.state.fragments
        index = vol._index  # noqa: SLF001 - same module
        if not len(index):
            return None
        coords = np.unravel_index(index, vol.shape)
        return tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)


def open_corrected(store, threshold: float | None = None) -> CorrectedStore:
    """Open a segmentation store and replay its journal, keeping the volumes on disk.

    Parameters
    ----------
    store : str or path-like
        The segmentation store.
    threshold : float, optional
        Threshold of the starting table; the store's by default.

    Returns
    -------
    CorrectedStore
        The store, the corrected lazy state and the number of journal lines.

    Raises
    ------
    VolumeError
        If the store cannot be read.
    JournalError
        If the journal is corrupted or belongs to another starting state.

    Notes
    -----
    The region-graph edges are loaded only when the journal has a split, and
    then only those touching the segments it names: the state takes no
    further edit of other segments.
    """
    from .journal import journal_path, read_journal, replay

    store = Path(store).expanduser()
    path = journal_path(store)
    journaled = path.exists() and path.stat().st_size > 0
    # only splits read the region-graph edges, and only those of the segments
    # the journal names: the others are never loaded
    records = read_journal(path).records if journaled else []
    named = _journal_segments(records)
    splits = any(r.get("kind") == "split" for r in records)
    stored = _open_without_edges(store, named if splits else None, threshold)
    state = lazy_state_from_store(stored, threshold, edges=splits)
    edits = len(replay(state, path).entries) if journaled else 0
    return CorrectedStore(stored, state, edits)
