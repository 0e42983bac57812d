"""The npe2 reader: open EM volumes (zarr, OME-Zarr, TIFF, HDF5, NumPy) as napari layers.

Imports no napari and no Qt: it returns layer data tuples.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .io import Volume, VolumeError, list_arrays, open_volume, parse_volume_spec
from .io.multiscale import viewing_levels
from .io.volumes import volume_format

LayerData = tuple[Any, dict, str]

_LABEL_WORDS = ("label", "seg", "neuron", "truth", "synapse", "mito")
_IMAGE_WORDS = ("raw", "image", "img", "em", "data", "intensity")


def napari_get_reader(path: str | os.PathLike | list) -> Callable[[Any], list] | None:
    """Return a reader for ``path`` when it is a volume this plugin reads, else None.

    Parameters
    ----------
    path : str, path-like or list
        What napari asks about; a list is handled only when it holds one path.

    Returns
    -------
    callable or None
        `read_volume_layers`, or None for several paths, an unsupported suffix,
        a directory that is not a zarr store, or a path that does not exist.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        file, _ = parse_volume_spec(path)
    except (TypeError, ValueError, OSError):
        return None
    if not file.exists() or volume_format(file) is None:
        return None
    return read_volume_layers


def looks_like_labels(name: str, dtype: Any) -> bool:
    """Guess whether an array holds label ids rather than intensities.

    Parameters
    ----------
    name : str
        The array name.
    dtype : dtype-like
        Its dtype.

    Returns
    -------
    bool
        True for integer arrays whose name mentions labels, segmentation,
        neurons, truth (``gt``), synapses or mitochondria, or integer arrays
        wider than 8 bits whose name does not say raw/image/em/data.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        return False
    lowered = name.lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", lowered) if t]
    if any(word in lowered for word in _LABEL_WORDS) or "gt" in tokens:
        return True
    if any(t in _IMAGE_WORDS for t in tokens):
        return False
    return dtype.itemsize > 1


def _layer(vol: Volume) -> LayerData:
    labels = vol.labels if vol.labels is not None else looks_like_labels(vol.name, vol.dtype)
    kind = "labels" if labels else "image"
    levels = viewing_levels(vol.levels, vol.voxel_size)
    multiscale = len(levels) > 1
    kwargs: dict[str, Any] = {
        "name": vol.name,
        "metadata": {"source": vol.source, "voxel_size_nm": vol.voxel_size},
    }
    if vol.voxel_size is not None:
        kwargs["scale"] = tuple(vol.voxel_size)
    if vol.translate is not None and any(vol.translate):
        kwargs["translate"] = tuple(vol.translate)
    if multiscale:
        kwargs["multiscale"] = True
    if kind == "image":
        if vol.dtype == np.uint8:
            kwargs["contrast_limits"] = (0, 255)
        elif vol.dtype == np.bool_:
            kwargs["contrast_limits"] = (0, 1)
    return (levels if multiscale else levels[0]), kwargs, kind


def read_volume_layers(path: str | os.PathLike | list) -> list[LayerData]:
    """Read a volume file (or one array in it) as napari layer data tuples, lazily.

    A container (``.npz``, HDF5, zarr group) with no array named gives one
    layer per 2D/3D array of the same shape as its raw array, image layers
    first; a named array (``vol.zarr/raw``) gives that layer alone.

    Parameters
    ----------
    path : str, path-like or list
        The file, or a one-element list of it.

    Returns
    -------
    list of (data, kwargs, layer_type)
        Lazy data: zarr, HDF5 and compressed TIFF arrays as dask arrays (a
        slice reads only the chunks it touches), ``.npy`` memory-mapped,
        ``.npz`` loaded. ``scale`` is the voxel size in nm when known,
        ``translate`` the OME-Zarr offset in nm when not zero; ``metadata``
        holds ``source`` and ``voxel_size_nm``. Multiscale volumes (and big
        single-scale ones, see `napari_connectome.io.multiscale`) give a list
        of levels, finest first, with ``multiscale=True``. Arrays the file
        marks as labels (OME-Zarr ``image-label``, a segmentation store's
        ``fragments`` and ``segmentation``) are labels layers, others are
        guessed from name and dtype (`looks_like_labels`).

    Raises
    ------
    VolumeError
        When the volume (or the container's main array) cannot be read.
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    file, array = parse_volume_spec(path)
    if array is not None:
        return [_layer(open_volume(path))]
    names = list_arrays(file)
    try:
        main = open_volume(file)
    except VolumeError:
        if len(names) < 2:
            raise
        main = _first_readable(file, names)  # several arrays, none named raw/image/...
    main_key = _array_key(main, file)
    layers = [_layer(main)]
    for name in names:
        if name.strip("/") == main_key:
            continue
        try:
            other = open_volume(file, array=name)
        except VolumeError:
            continue  # not a 2D/3D single-channel array: leave it out
        if other.shape == main.shape:
            layers.append(_layer(other))
    layers.sort(key=lambda layer: layer[2] != "image")  # stable: image layers first
    return layers


def _array_key(vol: Volume, file: Path) -> str:
    """Return the array path a volume was opened from (``""`` for the whole file)."""
    prefix = f"{file}:"
    return vol.source[len(prefix) :].strip("/") if vol.source.startswith(prefix) else ""


def _first_readable(file: Path, names: list[str]) -> Volume:
    """Open the first array that reads as a 2D/3D volume, preferring images over labels."""
    opened = []
    for name in names:
        try:
            opened.append(open_volume(file, array=name))
        except VolumeError:
            continue
    if not opened:
        raise VolumeError(
            f"{file} holds no 2D or 3D single-channel array. Available arrays: {', '.join(names)}."
        )
    images = [v for v in opened if not looks_like_labels(v.name, v.dtype)]
    return (images or opened)[0]
