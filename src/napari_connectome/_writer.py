"""napari writer: save a labels layer as OME-Zarr, TIFF or HDF5 (File > Save Layers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .io.export import export_labels


def _voxel_size(meta: dict, ndim: int):
    scale = meta.get("scale")
    if scale is not None and len(scale) >= ndim:
        scale = [float(s) for s in list(scale)[-ndim:]]
        if any(s != 1.0 for s in scale):
            return scale
    size = (meta.get("metadata") or {}).get("voxel_size_nm")
    if size is not None and len(size) >= ndim:
        return [float(s) for s in list(size)[-ndim:]]
    return None


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a labels layer's data to ``path`` (format from its suffix).

    Parameters
    ----------
    path : str
        Destination: ``.ome.zarr``/``.zarr``, ``.tif``/``.tiff`` or ``.h5``.
    data : array-like
        The labels (level 0 of a multiscale layer is written).
    meta : dict
        Layer attributes; the voxel size (nm) comes from ``scale`` when it is
        not all ones, else from ``metadata["voxel_size_nm"]``.

    Returns
    -------
    list of str
        The written path; an existing file is replaced (napari asks first).
    """
    if isinstance(data, list | tuple):
        data = data[0]
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    written = export_labels(
        data, path, voxel_size=_voxel_size(meta or {}, len(data.shape)), overwrite=True
    )
    return [str(written)]
