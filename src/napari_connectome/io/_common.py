"""Pieces shared by the format readers: the error type, units, array choice."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class VolumeError(ValueError):
    """A volume could not be read; the message names the problem and what to do."""


#: Array names tried, in order, when a container holds several arrays and none is named.
DEFAULT_ARRAY_NAMES = ("raw", "image", "volumes/raw", "volumes/image", "em", "data")

#: Array names that hold metadata, never a volume.
METADATA_NAMES = frozenset({"voxel_size", "resolution", "element_size_um", "spacing", "offset"})

# Length units to nanometres (NGFF names, their abbreviations and ImageJ spellings).
_NM_PER_UNIT = {
    "angstrom": 0.1,
    "a": 0.1,
    "å": 0.1,
    "picometer": 1e-3,
    "pm": 1e-3,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "nm": 1.0,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "micron": 1e3,
    "microns": 1e3,
    "um": 1e3,
    "\u00b5m": 1e3,  # micro sign
    "\u03bcm": 1e3,  # greek mu
    "\\u00b5m": 1e3,  # ImageJ writes the escape literally
    "millimeter": 1e6,
    "millimetre": 1e6,
    "mm": 1e6,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "cm": 1e7,
    "decimeter": 1e8,
    "meter": 1e9,
    "metre": 1e9,
    "m": 1e9,
    "inch": 2.54e7,
    "in": 2.54e7,
}


def nm_per_unit(unit: str | None) -> float | None:
    r"""Return how many nanometres one ``unit`` is, or None for an unknown or missing unit.

    Parameters
    ----------
    unit : str or None
        A length unit as written by OME-Zarr (``"micrometer"``), ImageJ
        (``"micron"``, ``"\u00B5m"``) or by hand (``"nm"``).

    Returns
    -------
    float or None
        The factor to nanometres; None when the unit is missing, ``"pixel"`` or unknown.
    """
    if unit is None:
        return None
    key = str(unit).strip().lower()
    return _NM_PER_UNIT.get(key)


def as_voxel_size(values: Any, ndim: int, factor: float = 1.0) -> tuple[float, ...] | None:
    """Turn a metadata value into a voxel size in nm of length ``ndim``, or None.

    A value longer than ``ndim`` keeps its last ``ndim`` entries (a ``(z, y, x)``
    resolution stored beside a 2D array); a shorter, non-numeric or non-positive
    one gives None.
    """
    if values is None:
        return None
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    seq = [float(arr[0])] * ndim if arr.size == 1 else [float(v) for v in arr]
    if len(seq) < ndim or ndim == 0:
        return None
    seq = seq[len(seq) - ndim :]
    if not all(np.isfinite(v) and v > 0 for v in seq):
        return None
    return tuple(v * factor for v in seq)


def pick_array(names: Sequence[str], path: Any) -> str:
    """Choose the array to open from a container when the caller named none.

    Parameters
    ----------
    names : sequence of str
        The arrays the container holds (as `list_arrays` gives them).
    path : path-like
        The container, for the error message.

    Returns
    -------
    str
        The first of `DEFAULT_ARRAY_NAMES` present, else the only array.

    Raises
    ------
    VolumeError
        When the container holds no array, or several and none has a default name.
    """
    stripped = {n.strip("/"): n for n in names}
    for default in DEFAULT_ARRAY_NAMES:
        if default in stripped:
            return stripped[default]
    if len(names) == 1:
        return names[0]
    if not names:
        raise VolumeError(f"{path} holds no 2D or 3D array to open.")
    raise VolumeError(
        f"{path} holds several arrays and none is named {', '.join(DEFAULT_ARRAY_NAMES[:5])}; "
        f"name one as PATH:ARRAY (e.g. {path}:{names[0]}). Available arrays: {', '.join(names)}."
    )


def missing_array(path: Any, array: str, names: Sequence[str]) -> VolumeError:
    """Build the error for an array the container does not hold."""
    listing = ", ".join(names) if names else "none"
    return VolumeError(f"{path} holds no array {array!r}. Available arrays: {listing}.")


def corrupted(path: Any, exc: BaseException) -> VolumeError:
    """Build the error for a file that exists but cannot be parsed."""
    return VolumeError(
        f"{path} looks corrupted or truncated (could not read it: {type(exc).__name__}: {exc})."
    )


def short_name(array_path: str | None, fallback: str) -> str:
    """Return the last component of an array path, or ``fallback`` for the root."""
    if array_path:
        last = array_path.strip("/").rsplit("/", 1)[-1]
        if last:
            return last
    return fallback


def stem(path: Any) -> str:
    """Return a file name without its format suffixes (``vol.ome.zarr`` -> ``vol``)."""
    name = str(getattr(path, "name", path)).rstrip("/")
    return re.sub(r"(\.ome)?\.(zarr|npz|npy|h5|hdf5|hdf|tiff?|n5)$", "", name, flags=re.I) or name


@dataclass
class Found:
    """What a format reader found, before squeezing and validation.

    Attributes
    ----------
    levels : list
        The array levels, finest first.
    voxel_size : tuple of float or None
        nm per axis of ``levels[0]`` (None entries for non-spatial axes), or None.
    name : str
        A short layer name.
    source : str
        The path (and array) it came from.
    axes : list of str or None
        Axis names (``"z"``, ``"c"``, ``"t"``...) when the format records them.
    spatial : list of bool or None
        Which axes are spatial, when the format says so.
    color : bool
        True when the format says the samples are RGB(A).
    translate : tuple of float or None
        Position of the first voxel of ``levels[0]`` in nm per axis (None
        entries for non-spatial axes), when the format records it.
    labels : bool or None
        True when the format marks the array as label ids (an OME-Zarr
        ``image-label``, a segmentation store's ids), False when it marks it
        as an image, None when it does not say.
    """

    levels: list
    voxel_size: tuple | None
    name: str
    source: str
    axes: list | None = None
    spatial: list | None = None
    color: bool = False
    translate: tuple | None = None
    labels: bool | None = None


class OpenArray:
    """An array-like that keeps the file it reads from open.

    ``dask.array.from_array`` wraps it, so the dask graph (and so the napari
    layer) holds the file as long as it holds the array.

    Parameters
    ----------
    array : array-like
        An object with ``shape``, ``dtype`` and numpy-style ``__getitem__``
        (an ``h5py.Dataset``, a zarr array over a TIFF store).
    owner : object
        The open file the array reads from (``h5py.File``, ``tifffile.TiffFile``).
    """

    def __init__(self, array: Any, owner: Any):
        self.array = array
        self.owner = owner
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self.array[key])


def dask_chunks(shape: tuple, dtype: Any, native: tuple | None) -> Any:
    """Choose dask chunks for a lazily read array.

    Whole planes for contiguous 3D data (napari shows one plane at a time),
    otherwise multiples of the file's own chunks of about dask's default size.
    """
    import dask.array as da

    if not shape or 0 in shape:
        return shape or ()
    if native is None and len(shape) == 3:
        plane = int(np.prod(shape[1:])) * np.dtype(dtype).itemsize
        if plane <= 256 * 2**20:
            return (1, *shape[1:])
    return da.core.normalize_chunks(
        "auto", shape, dtype=np.dtype(dtype), previous_chunks=native or None
    )


def lazy(array: Any, owner: Any, chunks: Any, name: str) -> Any:
    """Wrap ``array`` (read from the open file ``owner``) in a dask array.

    Parameters
    ----------
    array : array-like
        What to read from.
    owner : object
        The open file; kept alive by the dask graph.
    chunks : tuple or str
        Dask chunks.
    name : str
        A stable key for the array (path, array, modification time).
    """
    import dask.array as da
    from dask.base import tokenize

    wrapped = OpenArray(array, owner)
    meta = np.empty((0,) * wrapped.ndim, dtype=wrapped.dtype)
    return da.from_array(wrapped, chunks=chunks, meta=meta, name="volume-" + tokenize(name))
