"""Open EM volumes (zarr, OME-Zarr, TIFF, HDF5, NumPy) lazily, with their voxel size in nm.

A volume is named on the command line as ``PATH`` or ``PATH:ARRAY``
(``vol.npz:raw``, ``vol.h5:/volumes/raw``, ``vol.zarr:raw``); a path inside a
zarr store or an HDF5 file (``vol.zarr/raw``, ``vol.h5/volumes/raw``) works too.

Examples
--------
>>> from napari_connectome.io import open_volume
>>> vol = open_volume("vol.zarr:raw")  # doctest: +SKIP
>>> vol.data.shape, vol.voxel_size  # doctest: +SKIP
((30, 512, 512), (50.0, 4.0, 4.0))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _formats, _zarr
from ._common import Found, VolumeError, corrupted
from .multiscale import as_dask

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Volume",
    "VolumeError",
    "list_arrays",
    "open_volume",
    "parse_volume_spec",
    "read_array",
    "volume_format",
]

#: File suffixes read, by format.
SUPPORTED_SUFFIXES = {
    ".zarr": "zarr",
    ".npz": "npz",
    ".npy": "npy",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".tif": "tiff",
    ".tiff": "tiff",
}

_OPENERS = {
    "zarr": _zarr.open_zarr,
    "npz": _formats.open_npz,
    "npy": _formats.open_npy,
    "hdf5": _formats.open_h5,
    "tiff": _formats.open_tiff,
}

_LISTERS = {
    "zarr": _zarr.list_zarr,
    "npz": _formats.list_npz,
    "hdf5": _formats.list_h5,
}

_CONTAINER_FILES = (".npz", ".h5", ".hdf5", ".hdf")


@dataclass
class Volume:
    """A volume opened from disk.

    Attributes
    ----------
    data : array-like
        Level 0: a numpy array, ``np.memmap``, ``zarr.Array`` or dask array of
        shape ``(z, y, x)`` or ``(y, x)``. Slicing it reads only that part for
        every format but ``.npz``.
    levels : list
        All multiscale levels, finest first (``[data]`` when not multiscale).
    voxel_size : tuple of float or None
        Nanometres per axis, one per dimension of `data`; None when unknown.
    name : str
        A short layer name (the array name or the file stem).
    source : str
        The path (and array) it came from.
    translate : tuple of float or None
        Position of the first voxel in nm per axis (OME-Zarr ``translation``),
        None when the file does not record one.
    labels : bool or None
        True when the file marks the array as label ids (an OME-Zarr
        ``image-label``, a segmentation store's ``fragments`` or
        ``segmentation``), False when it marks an image, None when it does not say.
    """

    data: Any
    levels: list
    voxel_size: tuple[float, ...] | None
    name: str
    source: str
    translate: tuple[float, ...] | None = None
    labels: bool | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of level 0."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of level 0."""
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        """The number of dimensions of level 0."""
        return len(self.data.shape)


def volume_format(path: str | os.PathLike) -> str | None:
    """Return the format of ``path`` (``"zarr"``, ``"npz"``, ``"npy"``, ``"hdf5"``, ``"tiff"``).

    Parameters
    ----------
    path : path-like
        A file or directory (it need not exist for a file suffix to be recognised).

    Returns
    -------
    str or None
        None for an unsupported suffix or a directory that is not a zarr store.
    """
    p = Path(path)
    if p.is_dir():
        return "zarr" if _zarr.is_zarr_node(p) else None
    return SUPPORTED_SUFFIXES.get(p.suffix.lower())


def _split_inside(path: Path, array: str | None) -> tuple[Path, str | None]:
    """Split a path that points inside a container (a zarr store, an HDF5 or npz file)."""
    if path.exists():
        root = _zarr.zarr_root(path)
        if root is None or root == path:
            return path, array
        inner = path.relative_to(root).as_posix()
    else:
        for parent in path.parents:
            if parent.exists():
                break
        else:
            return path, array
        is_container = (parent.is_file() and parent.suffix.lower() in _CONTAINER_FILES) or (
            parent.is_dir() and _zarr.is_zarr_node(parent)
        )
        if not is_container:
            return path, array
        root = _zarr.zarr_root(parent) if parent.is_dir() else parent
        inner = path.relative_to(root).as_posix()
    if array:
        inner = inner + "/" + array.strip("/")
    return root, inner


def parse_volume_spec(spec: str | os.PathLike) -> tuple[Path, str | None]:
    """Split a volume spec into the file and the array inside it.

    Parameters
    ----------
    spec : str or path-like
        ``PATH`` or ``PATH:ARRAY``: ``vol.tif``, ``vol.npz:raw``,
        ``vol.h5:/volumes/raw``, ``vol.zarr:raw``; or a path inside a container,
        ``vol.zarr/raw`` or ``vol.h5/volumes/raw``. A path that exists as a
        whole is never split at ``':'``.

    Returns
    -------
    path : Path
        The file or zarr store.
    array : str or None
        The array inside it (leading ``/`` kept as given), None when not named.

    Examples
    --------
    >>> parse_volume_spec("vol.npz:raw")
    (PosixPath('vol.npz'), 'raw')
    >>> parse_volume_spec("vol.tif")
    (PosixPath('vol.tif'), None)
    """
    text = os.fspath(spec)
    whole = Path(text).expanduser()
    if whole.exists() or ":" not in text:
        return _split_inside(whole, None)
    cuts = [i for i, ch in enumerate(text) if ch == ":"]
    for i in reversed(cuts):  # the longest prefix that exists
        left = Path(text[:i]).expanduser()
        if text[:i] and left.exists():
            return _split_inside(left, text[i + 1 :] or None)
    for i in cuts:  # nothing exists: split after the first known suffix
        left = Path(text[:i]).expanduser()
        if left.suffix.lower() in SUPPORTED_SUFFIXES:
            return left, text[i + 1 :] or None
    return _split_inside(whole, None)


def _check_exists(path: Path) -> str:
    if not path.exists():
        raise VolumeError(f"no such file: {path}")
    fmt = volume_format(path)
    if fmt is None:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        what = "directory (not a zarr store)" if path.is_dir() else f"suffix {path.suffix!r}"
        raise VolumeError(
            f"{path}: unknown format, {what}. Supported: {supported} "
            "(OME-Zarr included); name a file with one of these suffixes."
        )
    return fmt


def list_arrays(path: str | os.PathLike) -> list[str]:
    """Name the arrays a container holds, as `open_volume` accepts them after ``':'``.

    Parameters
    ----------
    path : str or path-like
        An ``.npz``, HDF5 file or zarr store.

    Returns
    -------
    list of str
        Arrays of two or more dimensions (metadata arrays such as
        ``voxel_size`` left out). HDF5 datasets are given by full path without
        the leading ``/``; an OME-Zarr multiscale group counts as one array and
        a store whose root is a multiscale image lists it as ``"/"``. Files that
        hold a single array (``.npy``, TIFF, a zarr array) give ``[]``.

    Raises
    ------
    VolumeError
        For a missing, unsupported or corrupted file.
    """
    p, _ = parse_volume_spec(path)
    fmt = _check_exists(p)
    lister = _LISTERS.get(fmt)
    return lister(p) if lister else []


def _squeeze(found: Found) -> Found:
    """Drop singleton non-spatial axes (and singleton axes beyond three dimensions)."""
    shape = tuple(found.levels[0].shape)
    spatial = found.spatial or [True] * len(shape)
    drop = [i for i, n in enumerate(shape) if n == 1 and not spatial[i]]
    keep = [i for i in range(len(shape)) if i not in drop]
    while len(keep) > 3:
        ones = [i for i in keep if shape[i] == 1]
        if not ones:
            break
        keep.remove(ones[0])
    if len(keep) == len(shape):
        return found
    index = tuple(slice(None) if i in keep else 0 for i in range(len(shape)))
    levels = [as_dask(level)[index] for level in found.levels]
    size, offset = found.voxel_size, found.translate
    found.voxel_size = tuple(size[i] for i in keep) if size is not None else None
    found.translate = tuple(offset[i] for i in keep) if offset is not None else None
    found.levels = levels
    found.axes = [found.axes[i] for i in keep] if found.axes else None
    found.spatial = [spatial[i] for i in keep]
    return found


def _grayscale_error(found: Found, shape: tuple) -> VolumeError:
    if shape and shape[-1] in (3, 4):
        hint = "data[..., 0]"
    elif shape and shape[0] <= 4:
        hint = "data[0]"
    elif len(shape) >= 4 and shape[1] <= 4:
        hint = "data[:, 0]"
    else:
        hint = "data[..., 0]"
    axes = f" (axes {','.join(found.axes)})" if found.axes else ""
    return VolumeError(
        f"{found.source}: expected a 2D (y, x) or 3D (z, y, x) grayscale volume; "
        f"got shape {shape}{axes}. If it has channels, pick one channel, e.g. {hint}, "
        "and save it as its own array."
    )


def _looks_color(found: Found, shape: tuple) -> bool:
    if found.color:
        return True
    if found.spatial is not None and not all(found.spatial):
        return True  # a channel or time axis is left
    return len(shape) == 3 and shape[-1] in (3, 4) and min(shape[:2]) > 4 * shape[-1]


def open_volume(
    spec: str | os.PathLike, *, array: str | None = None, grayscale: bool = True
) -> Volume:
    """Open a volume lazily, with all its multiscale levels and its voxel size in nm.

    Parameters
    ----------
    spec : str or path-like
        ``PATH`` or ``PATH:ARRAY`` (see `parse_volume_spec`): a zarr store or
        OME-Zarr image (NGFF 0.4 or 0.5), ``.npz``, ``.npy``, HDF5 or TIFF file.
    array : str, optional
        The array inside a container, instead of writing ``PATH:ARRAY``. When
        neither names one, ``raw``, ``image``, ``volumes/raw``, ``em``,
        ``data`` or the only array is taken.
    grayscale : bool, default True
        Require a 2D ``(y, x)`` or 3D ``(z, y, x)`` single-channel volume,
        after dropping singleton channel/time axes. Label volumes pass too.

    Returns
    -------
    Volume
        Zarr arrays come back as ``zarr.Array`` (or dask when axes were
        dropped), HDF5 and compressed TIFF as dask arrays, ``.npy`` and plain
        TIFF memory-mapped; only ``.npz`` members are loaded.

    Raises
    ------
    VolumeError
        For a missing file, an unknown format, a missing array (the message
        lists what the container holds), a volume that is not 2D/3D grayscale,
        an empty array, or a corrupted or truncated file.
    """
    path, named = parse_volume_spec(spec)
    if array is not None and named is not None and array.strip("/") != named.strip("/"):
        raise VolumeError(
            f"{spec} names array {named!r} but array={array!r} was also given; name one."
        )
    array = array if array is not None else named
    fmt = _check_exists(path)
    found = _OPENERS[fmt](path, array)
    if grayscale:
        found = _squeeze(found)
    data = found.levels[0]
    shape = tuple(int(n) for n in data.shape)
    if 0 in shape or not shape:
        raise VolumeError(f"{found.source} is empty: shape {shape}.")
    if grayscale and (len(shape) not in (2, 3) or _looks_color(found, shape)):
        raise _grayscale_error(found, shape)
    try:  # read one element so a broken chunk or truncated file shows now, not in napari
        probe = data[(slice(0, 1),) * len(shape)]
        np.asarray(probe.compute() if hasattr(probe, "compute") else probe)
    except Exception as exc:
        raise corrupted(found.source, exc) from exc
    return Volume(
        data=data,
        levels=list(found.levels),
        voxel_size=_per_axis(found.voxel_size, found.spatial, shape, 1.0),
        name=found.name,
        source=found.source,
        translate=_per_axis(found.translate, found.spatial, shape, 0.0),
        labels=found.labels,
    )


def _per_axis(values, spatial, shape, fill: float) -> tuple[float, ...] | None:
    """Check a per-axis value (voxel size, offset) against the shape; ``fill`` non-spatial axes.

    None entries mark non-spatial axes; on a spatial axis they make the whole value unknown.
    """
    if values is None:
        return None
    spatial = spatial or [True] * len(values)
    if len(values) != len(shape) or any(
        v is None and s for v, s in zip(values, spatial, strict=True)
    ):
        return None
    return tuple(fill if v is None else float(v) for v in values)


def read_array(spec: str | os.PathLike, **kw: Any) -> np.ndarray:
    """Open a volume and load level 0 into memory as a numpy array.

    Parameters
    ----------
    spec : str or path-like
        As for `open_volume`.
    **kw
        Passed to `open_volume` (``array``, ``grayscale``).

    Returns
    -------
    numpy.ndarray
        The whole of level 0, in memory (not memory-mapped).
    """
    data = open_volume(spec, **kw).data
    if isinstance(data, np.memmap):
        return np.array(data)
    if isinstance(data, np.ndarray):
        return data
    if hasattr(data, "compute"):
        return np.asarray(data.compute())
    return np.asarray(data[...])
