"""A virtual label volume that holds one box of values: the Review dock's item layers.

The Review dock shows each item in a box of the volume.  Putting a box-sized
array on a layer and moving the layer changes its extent, and napari then
re-slices and redraws every layer; a :class:`BoxVolume` keeps the whole
volume's shape (the layer never moves) and only the box's values change, so
showing the next item is one ``layer.refresh()`` of that layer.
"""

from __future__ import annotations

import numpy as np


class BoxVolume:
    """A read-only array-like of a volume's shape: ``values`` inside ``box``, 0 elsewhere.

    Parameters
    ----------
    shape : sequence of int
        Shape of the volume.
    dtype : numpy.dtype
        Value type (an integer type for labels).

    Attributes
    ----------
    box : tuple of slice or None
        Where the values are (None: nowhere, all zeros).
    values : numpy.ndarray or None
        The values, of the box's shape.
    """

    def __init__(self, shape, dtype) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.box: tuple | None = None
        self.values: np.ndarray | None = None

    @property
    def ndim(self) -> int:
        """int: Number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """int: Number of voxels."""
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def set(self, box, values) -> None:
        """Put ``values`` (the box's shape) in ``box``; the rest is 0.

        Parameters
        ----------
        box : tuple of slice
            Box inside the volume (steps of 1).
        values : array-like
            Its values.
        """
        box = tuple(slice(int(s.start), int(s.stop)) for s in box)
        values = np.asarray(values, dtype=self.dtype)
        if len(box) != self.ndim or values.shape != tuple(s.stop - s.start for s in box):
            raise ValueError(f"values of shape {values.shape} do not fill the box {box}")
        self.box, self.values = box, values

    def clear(self) -> None:
        """Make every value 0."""
        self.box = self.values = None

    def _key(self, key) -> tuple:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        if len(key) != self.ndim:
            raise IndexError(f"too many indices for a {self.ndim}-d volume: {key}")
        return key

    def __getitem__(self, key):
        key = self._key(key)
        picks = []  # per axis: the volume indices asked for (an int drops the axis)
        for k, n in zip(key, self.shape, strict=True):
            if isinstance(k, slice):
                picks.append(np.arange(n)[k])
            else:
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is outside an axis of {n}")
                picks.append(i % n)
        out_shape = tuple(len(p) for p in picks if not np.isscalar(p))
        out = np.zeros(out_shape, self.dtype)
        if self.box is None:
            return out
        where, take = [], []
        for p, s in zip(picks, self.box, strict=True):
            idx = np.atleast_1d(p)
            inside = (idx >= s.start) & (idx < s.stop)
            if not inside.any():
                return out
            where.append(np.flatnonzero(inside))
            take.append(idx[inside] - s.start)
        block = self.values[np.ix_(*take)]
        kept = [i for i, p in enumerate(picks) if not np.isscalar(p)]
        block = block.reshape([block.shape[i] for i in kept])
        out[np.ix_(*[where[i] for i in kept])] = block
        return out

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)


def in_plane_outline(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Return the labels on their in-plane borders only (0 inside): outlines, per section.

    Parameters
    ----------
    labels : numpy.ndarray
        2D or 3D labels (the last two axes are the plane).
    width : int, optional
        Border width in pixels.

    Returns
    -------
    numpy.ndarray
        ``labels`` where a pixel within ``width`` in y or x has another label, else 0.
    """
    edge = np.zeros(labels.shape, bool)
    for axis in (-2, -1):
        n = labels.shape[axis]
        for w in range(1, min(width, n - 1) + 1):
            a = [slice(None)] * labels.ndim
            b = [slice(None)] * labels.ndim
            a[axis], b[axis] = slice(w, None), slice(None, -w)
            differ = labels[tuple(a)] != labels[tuple(b)]
            edge[tuple(a)] |= differ
            edge[tuple(b)] |= differ
    return np.where(edge, labels, 0)
