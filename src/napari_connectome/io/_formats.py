"""NumPy (.npy, .npz), HDF5 and TIFF volumes."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    METADATA_NAMES,
    Found,
    VolumeError,
    as_voxel_size,
    corrupted,
    dask_chunks,
    lazy,
    missing_array,
    nm_per_unit,
    pick_array,
    short_name,
    stem,
)


def _stamp(path: Path, array: str = "") -> str:
    st = path.stat()
    return f"{path.resolve()}:{array}:{st.st_mtime_ns}:{st.st_size}"


# --------------------------------------------------------------------- NumPy


def open_npy(path: Path, array: str | None) -> Found:
    """Memory-map a ``.npy`` file (nothing is read until sliced)."""
    if array:
        raise VolumeError(f"{path} holds a single array; drop ':{array}' from the path.")
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise corrupted(path, exc) from exc
    return Found(levels=[data], voxel_size=None, name=stem(path), source=str(path))


def _npz_shapes(path: Path) -> dict[str, tuple]:
    """Read the shape of every array of an ``.npz`` from the headers alone."""
    fmt = np.lib.format
    shapes = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as f:
                version = fmt.read_magic(f)
                if version == (1, 0):
                    shape = fmt.read_array_header_1_0(f)[0]
                elif version == (2, 0):
                    shape = fmt.read_array_header_2_0(f)[0]
                else:  # a newer header format: ask numpy
                    with np.load(path, allow_pickle=False) as npz:
                        shape = npz[member[:-4]].shape
            shapes[member[:-4]] = tuple(shape)
    return shapes


def list_npz(path: Path) -> list[str]:
    """List the 2D-or-more arrays of an ``.npz`` (metadata such as ``voxel_size`` left out)."""
    try:
        shapes = _npz_shapes(path)
    except Exception as exc:
        raise corrupted(path, exc) from exc
    return [k for k, s in shapes.items() if len(s) >= 2 and k not in METADATA_NAMES]


def open_npz(path: Path, array: str | None) -> Found:
    """Load one array of an ``.npz`` (compressed members cannot be memory-mapped)."""
    names = list_npz(path)
    key = (array or "").strip("/") or pick_array(names, path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise missing_array(path, array or key, names)
            data = npz[key]
            size = None
            for attr in ("voxel_size", "resolution"):
                if size is None and attr in npz.files:
                    size = as_voxel_size(npz[attr], data.ndim)
    except VolumeError:
        raise
    except Exception as exc:
        raise corrupted(path, exc) from exc
    return Found(levels=[data], voxel_size=size, name=key, source=f"{path}:{key}")


# ---------------------------------------------------------------------- HDF5


def _open_h5(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception as exc:
        raise corrupted(path, exc) from exc


def _list_h5_file(f: Any) -> list[str]:
    import h5py

    names: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
            if name.rsplit("/", 1)[-1] not in METADATA_NAMES:
                names.append(name)

    f.visititems(visit)
    return names


def list_h5(path: Path) -> list[str]:
    """List the 2D-or-more datasets of an HDF5 file by their full path (no leading ``/``)."""
    with _open_h5(path) as f:
        try:
            return _list_h5_file(f)
        except Exception as exc:
            raise corrupted(path, exc) from exc


def _h5_voxel_size(f: Any, ds: Any) -> tuple | None:
    for attrs in (ds.attrs, ds.parent.attrs, f.attrs):
        for attr, factor in (("voxel_size", 1.0), ("resolution", 1.0), ("element_size_um", 1e3)):
            if attr in attrs:
                size = as_voxel_size(attrs[attr], ds.ndim, factor)
                if size is not None:
                    return size
    return None


def open_h5(path: Path, array: str | None) -> Found:
    """Open an HDF5 dataset as a dask array; the file stays open while the array lives."""
    import h5py

    f = _open_h5(path)
    try:
        names = _list_h5_file(f)
        key = (array or "").strip("/") or pick_array(names, path)
        node = f.get(key) if key else None
        if not isinstance(node, h5py.Dataset):
            if isinstance(node, h5py.Group):
                inside = [n for n in names if n.startswith(key + "/")]
                raise VolumeError(
                    f"{path}:{key} is an HDF5 group, not a dataset; name a dataset inside it. "
                    f"Available arrays: {', '.join(inside) or 'none'}."
                )
            raise missing_array(path, array or key, names)
        size = _h5_voxel_size(f, node)
        chunks = dask_chunks(node.shape, node.dtype, node.chunks)
        data = lazy(node, f, chunks, _stamp(path, key))
    except VolumeError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise corrupted(path, exc) from exc
    name = short_name(key, stem(path))
    return Found(levels=[data], voxel_size=size, name=name, source=f"{path}:{key}")


# ---------------------------------------------------------------------- TIFF

_OME_PIXELS = re.compile(r"<(?:\w+:)?Pixels\b[^>]*>", re.S)


def _ome_sizes(xml: str) -> dict[str, float]:
    match = _OME_PIXELS.search(xml or "")
    if not match:
        return {}
    tag = match.group(0)
    out = {}
    for ax in "XYZ":
        value = re.search(rf'PhysicalSize{ax}="([^"]+)"', tag)
        unit = re.search(rf'PhysicalSize{ax}Unit="([^"]+)"', tag)
        factor = nm_per_unit(unit.group(1) if unit else "um")
        if value and factor:
            try:
                out[ax] = float(value.group(1)) * factor
            except ValueError:
                pass
    return out


def _tiff_sizes(tif: Any) -> dict[str, float]:
    """Return physical pixel sizes in nm by axis letter (X, Y, Z) from TIFF metadata."""
    if tif.is_ome:
        sizes = _ome_sizes(tif.ome_metadata)
        if sizes:
            return sizes
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    ij = tif.imagej_metadata or {}
    factor = nm_per_unit(ij.get("unit"))
    if factor is None:
        unit_tag = page.tags.get("ResolutionUnit")
        factor = {2: 2.54e7, 3: 1e7}.get(int(unit_tag.value) if unit_tag else 1)
    if factor is None:
        return {}
    sizes = {}
    for ax, tag_name in (("X", "XResolution"), ("Y", "YResolution")):
        tag = page.tags.get(tag_name)
        if tag is not None:
            num, den = tag.value
            if num > 0 and den > 0:
                sizes[ax] = den / num * factor
    if "spacing" in ij:
        try:
            sizes["Z"] = float(ij["spacing"]) * factor
        except (TypeError, ValueError):
            pass
    return sizes


def _tiff_voxel_size(axes: str, sizes: dict[str, float]) -> tuple | None:
    depth_axes = [a for a in axes if a not in "YXS"]
    out = []
    for ax in axes:
        key = "Z" if ax in "ZIQ" and len(depth_axes) == 1 else ax
        out.append(sizes.get(key) if key in "XYZ" else None)
    spatial = [a in "XYZIQ" for a in axes]
    if any(v is None for v, s in zip(out, spatial, strict=True) if s):
        return None
    return tuple(out)


def open_tiff(path: Path, array: str | None) -> Found:
    """Open a TIFF: memory-mapped when uncompressed, otherwise read lazily through zarr."""
    import tifffile
    import zarr

    if array:
        raise VolumeError(f"{path} holds a single image series; drop ':{array}' from the path.")
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise corrupted(path, exc) from exc
    try:
        series = tif.series[0]
        axes = series.axes.upper()
        page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
        color = "S" in axes and int(page.photometric) == int(tifffile.PHOTOMETRIC.RGB)
        if not color:  # grayscale planes stored as samples of one page: a depth axis
            axes = axes.replace("S", "Q")
        size = _tiff_voxel_size(axes, _tiff_sizes(tif))
        levels = []
        if len(series.levels) == 1:
            try:
                levels = [tifffile.memmap(path, mode="r")]
                if levels[0].shape != series.shape:
                    levels = []
            except Exception:  # compressed or tiled: not memory-mappable
                levels = []
        if not levels:
            for i in range(len(series.levels)):
                z = zarr.open(store=tif.aszarr(series=0, level=i), mode="r")
                levels.append(
                    lazy(z, tif, dask_chunks(z.shape, z.dtype, z.chunks), _stamp(path, str(i)))
                )
        else:
            tif.close()
    except VolumeError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise corrupted(path, exc) from exc
    spatial = [a in "XYZIQ" for a in axes]
    return Found(
        levels=levels,
        voxel_size=size,
        name=stem(path),
        source=str(path),
        axes=list(axes.lower()),
        spatial=spatial,
        color=color,
    )
