"""The segment ids of a proofreading state as an array-like a viewer slices.

A labels layer over a volume bigger than memory cannot hold the labels: a
:class:`LazyLabels` has the volume's ``shape``, ``dtype`` and ``ndim`` and
answers each ``labels[key]`` (slices, integers, or one integer array per axis)
with ``state.labels_in(box)`` of the box the key covers, so a viewer showing
one plane reads that plane of the fragments and nothing else.  The state may be
lazy (:func:`~napari_connectome.io.lazy_state.lazy_state_from_store`: the
fragments stay on disk) or in memory.

After an edit the labels change in the edit's box only; a viewer re-reads its
plane (``layer.refresh()``).  The stored fragment ids read for the planes shown
are kept in a small cache (a plane of a volume chunked deeper than one plane
keeps its whole slab of chunks, so the next planes are free) and the voxels
splits rewrote are put on them at each read: a merge, split, lock, undo or
redo redraws from the cache with one table lookup.

Pure numpy: no Qt, no napari, no torch.

Examples
--------
>>> labels = LazyLabels(session.state)  # doctest: +SKIP
>>> plane = labels[12]  # reads plane 12 of the fragments only  # doctest: +SKIP
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .lazy_state import full_key

__all__ = ["CACHE_BYTES", "MAX_READ_BYTES", "LazyLabels"]

#: Bytes of fragment blocks a :class:`LazyLabels` keeps for redraws.
CACHE_BYTES = 256 * 2**20
#: Largest read a :class:`LazyLabels` takes (fragments as ``uint64``): a viewer's 3D
#: view of a volume bigger than memory reads all of it, and is refused instead.
MAX_READ_BYTES = 2 * 2**30


def _axis(key, n: int):
    """Return ``(start, stop, step, drop)`` for one axis key (a slice or an integer)."""
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        return start, stop, step, False
    try:
        i = int(key)
    except (TypeError, ValueError):
        raise IndexError(f"cannot index a labels volume with {key!r}") from None
    if i != key:
        raise IndexError(f"cannot index a labels volume with {key!r}")
    if not -n <= i < n:
        raise IndexError(f"index {i} is outside an axis of {n}")
    i %= n
    return i, i + 1, 1, True


class LazyLabels:
    """Read-only segment ids of a proofreading state, read box by box.

    Parameters
    ----------
    state : ProofreadingState
        The state (its fragments in memory, or a
        :class:`~napari_connectome.io.lazy_state.PatchedVolume`).
    lift : bool, optional
        Show a 2D state as one section of a 3D volume (a leading axis of 1).
    cache_bytes : int, optional
        Bytes of fragment blocks kept for redraws (:data:`CACHE_BYTES`).
    max_read_bytes : int or None, optional
        Refuse (``MemoryError``) a read of more fragment bytes than this
        (:data:`MAX_READ_BYTES`); None: no limit.

    Attributes
    ----------
    reads : list of tuple of slice
        The boxes (state coordinates) read from the fragments, in order; blocks
        served from the cache are not listed.
    """

    def __init__(
        self,
        state,
        lift: bool = False,
        cache_bytes: int = CACHE_BYTES,
        max_read_bytes: int | None = MAX_READ_BYTES,
    ) -> None:
        self.state = state
        self.lift = bool(lift)
        self.cache_bytes = int(cache_bytes)
        self.max_read_bytes = None if max_read_bytes is None else int(max_read_bytes)
        shape = tuple(int(n) for n in state.fragments.shape)
        self.shape = ((1,) if self.lift else ()) + shape
        chunks = getattr(state.fragments, "chunks", None)
        self.chunks = None if chunks is None else ((1,) if self.lift else ()) + tuple(chunks)
        self.reads: list[tuple] = []
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()  # napari slices on the GUI thread, exports on a worker

    @property
    def dtype(self) -> np.dtype:
        """numpy.dtype: Type of the segment ids (the state's table)."""
        return np.dtype(self.state.table.dtype)

    @property
    def ndim(self) -> int:
        """int: Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """int: Number of voxels."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """int: Bytes the whole volume would take in memory (it never does here)."""
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<LazyLabels {self.shape} {self.dtype}>"

    # ----------------------------------------------------------------- reading
    def _slab(self, box) -> tuple:
        """Return the box to read for ``box``: a plane of chunks deeper than 1 grows to them.

        A plane of a volume chunked ``(64, 256, 256)`` decompresses 64 planes'
        worth of chunks; keeping them all (when they fit the cache) makes the
        next planes of the slab free.
        """
        if len(box) != 3 or self.chunks is None or box[0].stop - box[0].start != 1:
            return box
        depth = self.chunks[-3]
        if depth <= 1:
            return box
        z0 = box[0].start // depth * depth
        slab = (slice(z0, min(z0 + depth, self.state.fragments.shape[0])), *box[1:])
        n = int(np.prod([s.stop - s.start for s in slab], dtype=np.int64))
        return slab if n * self._raw_dtype().itemsize <= self.cache_bytes else box

    def _raw_dtype(self) -> np.dtype:
        """Dtype of kept blocks: stored ids are below the table's length."""
        return np.dtype(np.uint32 if len(self.state.table) <= 2**32 else np.uint64)

    def _read_raw(self, box) -> np.ndarray:
        """Read the stored ids of a box (no edits), in pieces of chunk rows."""
        frags = self.state.fragments
        if len(box) != 3:
            return frags.read(box, patched=False).astype(self._raw_dtype())
        out = np.empty([s.stop - s.start for s in box], self._raw_dtype())
        step = self.chunks[-2] if self.chunks else out.shape[1]
        lo, hi = box[1].start, box[1].stop
        for a in range(lo, hi, max(1, step)):
            b = min(a + step, hi)
            piece = (box[0], slice(a, b), *box[2:])
            out[:, a - lo : b - lo] = frags.read(piece, patched=False)
        return out

    def _fragments(self, box) -> np.ndarray:
        """Return the fragment ids in a box (state coordinates), edits included.

        The stored ids of the boxes read are kept (up to :attr:`cache_bytes`);
        the voxels splits rewrote are put on them at each read, so no edit
        makes a kept block stale.
        """
        frags = self.state.fragments
        if not hasattr(frags, "patch"):  # in memory: read as it is, nothing to keep
            self.reads.append(box)
            return np.asarray(frags[box])
        read_box = self._slab(box)
        key = tuple((s.start, s.stop) for s in read_box)
        with self._lock:
            raw = self._cache.get(key)
            if raw is not None:
                self._cache.move_to_end(key)
        if raw is None:
            self.reads.append(read_box)
            raw = self._read_raw(read_box)
            if raw.nbytes <= self.cache_bytes:
                with self._lock:
                    self._cache[key] = raw
                    total = sum(b.nbytes for b in self._cache.values())
                    while total > self.cache_bytes and len(self._cache) > 1:
                        _, old = self._cache.popitem(last=False)
                        total -= old.nbytes
        local = tuple(
            slice(s.start - r.start, s.stop - r.start) for s, r in zip(box, read_box, strict=True)
        )
        block = raw[local].astype(np.uint64)
        frags.patch(box, block)
        return block

    def read(self, box) -> np.ndarray:
        """Return the segment ids in a box of the layer (steps of 1), looked up afresh.

        Parameters
        ----------
        box : tuple of slice
            One slice per axis of :attr:`shape` (the lifted axis included).

        Returns
        -------
        numpy.ndarray
            Segment ids of the box, :attr:`dtype`.
        """
        box = tuple(slice(int(s.start), int(s.stop)) for s in box)
        if len(box) != self.ndim:
            raise IndexError(f"a box needs {self.ndim} slices; got {len(box)}")
        inner = box[1:] if self.lift else box
        shape = tuple(max(0, s.stop - s.start) for s in box)
        if 0 in shape:
            return np.zeros(shape, self.dtype)
        n = int(np.prod(shape, dtype=np.int64))
        if self.max_read_bytes is not None and n * 8 > self.max_read_bytes:
            raise MemoryError(
                f"reading {n:,} voxels at once ({n * 8 / 2**30:.1f} GiB) is over this "
                f"layer's limit of {self.max_read_bytes / 2**30:.1f} GiB: the volume is read "
                "plane by plane; use the 2D view (napari's 3D view reads all of it)"
            )
        frags = self._fragments(inner)
        if frags.dtype == np.uint64:
            frags = frags.view(np.int64)  # ids < table size: same bits, faster take
        labels = np.take(self.state.table, frags)
        return labels[None] if self.lift else labels

    def _points(self, key) -> np.ndarray:
        """Integer-array indexing: the ids at points (one array per axis, broadcast)."""
        arrays = np.broadcast_arrays(*[np.asarray(k) for k in key])
        if any(a.dtype.kind not in "iu" for a in arrays):
            raise IndexError("point indexing takes one integer array per axis")
        coords = [a.astype(np.int64) for a in arrays]
        for c, n in zip(coords, self.shape, strict=True):
            if c.size and (c.min() < -n or c.max() >= n):
                raise IndexError(f"a point is outside the volume {self.shape}")
            c %= n
        if self.lift:
            coords = coords[1:]
        frags = np.asarray(self.state.fragments[tuple(coords)]).astype(np.int64)
        return np.take(self.state.table, frags)

    def __getitem__(self, key):
        key = full_key(key, self.ndim)
        if any(isinstance(k, np.ndarray | list) and np.ndim(k) > 0 for k in key):
            if any(isinstance(k, slice) for k in key):
                raise IndexError(
                    "index a labels volume with slices and integers, or with one integer "
                    "array per axis (not both)"
                )
            return self._points(key)
        axes = [_axis(k, n) for k, n in zip(key, self.shape, strict=True)]
        box, step, drop = [], [], []
        for start, stop, st, dropped in axes:
            if st > 0:
                lo, hi = start, max(start, stop)
            else:  # a reversed slice: read its span, reverse afterwards
                lo, hi = (stop + 1, start + 1) if stop < start else (start, start)
            box.append(slice(lo, hi))
            step.append(st)
            drop.append(dropped)
        block = self.read(tuple(box))
        if any(s != 1 for s in step):
            block = block[tuple(slice(None, None, s) for s in step)]
        if any(drop):
            block = block[tuple(0 if d else slice(None) for d in drop)]
        return block

    def __setitem__(self, key, value):
        raise TypeError(
            "the labels of a proofreading session opened from disk are read-only: edit "
            "them with merge and split (napari's paint, fill and erase do not work here)"
        )

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            f"a LazyLabels volume {self.shape} is read box by box (index it with slices); "
            "converting it to one array would load the whole volume"
        )
