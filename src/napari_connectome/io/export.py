"""Export label volumes to OME-Zarr, TIFF or HDF5, block by block and atomically.

Pure Python: numpy, zarr, tifffile and h5py; no Qt, no napari, no torch.

>>> export_labels(labels, "neurons.ome.zarr", voxel_size=(40, 4, 4))  # doctest: +SKIP

The labels may be any array-like (numpy, zarr, dask, ``np.memmap``) or a callable
``read_block(slices) -> ndarray`` given with ``shape`` and ``dtype``, so that a
proofreading state streams ``state.labels_in(box)`` without building the volume
(``napari-connectome export`` replays the journal on
:func:`~napari_connectome.io.lazy_state.open_corrected`, whose volumes stay on
disk). Reads are whole chunks of the source (``source_chunks``) of at most about
one block of voxels; the first pyramid level is computed from the blocks as they
are read. Memory is bounded by the block, never by the volume.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import move_into_place, remove_path, temporary_sibling
from .label_pyramid import PYRAMID_MAX_SIZE, mode_downsample, pyramid_factors

__all__ = [
    "BIGTIFF_BYTES",
    "DEFAULT_CHUNKS_2D",
    "DEFAULT_CHUNKS_3D",
    "EXPORT_SUFFIXES",
    "PYRAMID_MAX_SIZE",
    "check_export_path",
    "describe_export",
    "export_format",
    "export_labels",
    "mode_downsample",
    "pyramid_factors",
]

#: Destination suffixes and their format.
EXPORT_SUFFIXES = {
    ".ome.zarr": "ome-zarr",
    ".zarr": "ome-zarr",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
}

#: Chunk (and block) shape of the exported OME-Zarr and HDF5 volumes.
DEFAULT_CHUNKS_3D = (64, 256, 256)
DEFAULT_CHUNKS_2D = (512, 512)

#: TIFF files larger than this are written as BigTIFF.
BIGTIFF_BYTES = 2**31

_TIFF_BLOCK_BYTES = 2**28  # at most ~256 MB of planes read at once for TIFF


def export_format(dest) -> str:
    """Return the export format of a destination from its suffix.

    Parameters
    ----------
    dest : str or path-like
        The destination path.

    Returns
    -------
    str
        ``"ome-zarr"``, ``"tiff"`` or ``"hdf5"``.

    Raises
    ------
    ValueError
        For an unsupported suffix; the message lists the supported ones.
    """
    name = Path(dest).name.lower()
    for suffix, fmt in EXPORT_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return fmt
    raise ValueError(
        f"cannot export labels to {dest}: unsupported suffix; use one of "
        f"{', '.join(EXPORT_SUFFIXES)}"
    )


def check_export_path(dest, *, overwrite: bool = False) -> Path:
    """Check that labels may be exported to ``dest``, before any work.

    Parameters
    ----------
    dest : str or path-like
        The destination.
    overwrite : bool, optional
        Allow replacing an existing destination.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    ValueError
        For an unsupported suffix.
    FileExistsError
        If ``dest`` exists and ``overwrite`` is False, or if it is a directory
        that an export would not have written (never replaced).
    FileNotFoundError
        If the parent folder does not exist.
    """
    path = Path(dest).expanduser()
    fmt = export_format(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(
                f"{path} exists; pass overwrite=True (--overwrite) to replace it"
            )
        if path.is_dir() and not path.is_symlink():
            is_store = any((path / n).exists() for n in (".zgroup", ".zattrs", "zarr.json"))
            if fmt != "ome-zarr" or not (is_store or not any(path.iterdir())):
                raise FileExistsError(
                    f"{path} is a directory that is not a zarr store; not replaced"
                )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: the folder {path.parent} does not exist")
    return path


class _Source:
    """Uniform block reading from an array-like or a ``read_block`` callable."""

    def __init__(self, labels, shape, dtype, chunks=None):
        if chunks is None:
            chunks = getattr(labels, "chunks", None)
        try:  # zarr and h5py give ints per axis; dask gives tuples (not used)
            self.chunks = tuple(max(1, int(c)) for c in chunks) if chunks else None
        except TypeError:
            self.chunks = None
        if callable(labels) and not hasattr(labels, "shape"):
            if shape is None or dtype is None:
                raise TypeError("a read_block callable needs shape= and dtype=")
            self.read = labels
            self.shape = tuple(int(n) for n in shape)
            self.dtype = np.dtype(dtype)
        else:
            self.shape = tuple(int(n) for n in labels.shape)
            self.dtype = np.dtype(labels.dtype if dtype is None else dtype)
            self.read = lambda box: labels[box]
        if self.dtype == np.bool_:
            self.dtype = np.dtype(np.uint8)
        if self.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers; got dtype {self.dtype}")
        if len(self.shape) not in (2, 3) or min(self.shape) < 1:
            raise ValueError(f"labels must be a non-empty 2D or 3D volume; got shape {self.shape}")
        if self.chunks is not None and len(self.chunks) != len(self.shape):
            self.chunks = None

    def block(self, box) -> np.ndarray:
        out = np.asarray(self.read(tuple(box)))
        want = tuple(s.stop - s.start for s in box)
        if out.shape != want:
            raise ValueError(f"read_block{_fmt_box(box)} returned shape {out.shape}, not {want}")
        return out.astype(self.dtype, copy=False)


def _fmt_box(box) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in box) + "]"


def _boxes(shape, block) -> list[tuple[slice, ...]]:
    """Block-aligned boxes covering ``shape``, in C order."""
    ranges = [range(0, n, b) for n, b in zip(shape, block, strict=True)]
    return [
        tuple(slice(s, min(s + b, n)) for s, b, n in zip(starts, block, shape, strict=True))
        for starts in product(*ranges)
    ]


def _group_shape(src: _Source, chunks) -> tuple[int, ...]:
    """Whole output chunks that also cover whole source chunks (no chunk read twice)."""
    if src.chunks is None:
        return tuple(chunks)
    return tuple(
        min(-(-n // c) * c, -(-s // c) * c)
        for s, c, n in zip(src.chunks, chunks, src.shape, strict=True)
    )


def _read_group(src: _Source, group, budget: int) -> np.ndarray:
    """Read a group box in slabs of whole source chunks of at most ~``budget`` voxels."""
    depth = group[0].stop - group[0].start
    plane = int(np.prod([s.stop - s.start for s in group[1:]], dtype=np.int64))
    step = max(1, budget // max(plane, 1))
    if src.chunks is not None:
        step = max(src.chunks[0], step // src.chunks[0] * src.chunks[0])
    if step >= depth:
        return src.block(group)
    out = np.empty([s.stop - s.start for s in group], dtype=src.dtype)
    for z in range(group[0].start, group[0].stop, step):
        box = (slice(z, min(z + step, group[0].stop)), *group[1:])
        out[z - group[0].start : box[0].stop - group[0].start] = src.block(box)
    return out


def _within(group, chunks) -> list[tuple[slice, ...]]:
    """Return the chunk boxes of a group, relative to the group and absolute."""
    shape = [s.stop - s.start for s in group]
    return [
        (
            box,
            tuple(
                slice(g.start + b.start, g.start + b.stop) for g, b in zip(group, box, strict=True)
            ),
        )
        for box in _boxes(shape, chunks)
    ]


def _chunks(shape, block_shape) -> tuple[int, ...]:
    if block_shape is None:
        block_shape = DEFAULT_CHUNKS_3D if len(shape) == 3 else DEFAULT_CHUNKS_2D
    if len(block_shape) != len(shape) or any(int(b) < 1 for b in block_shape):
        raise ValueError(f"block_shape {block_shape} does not fit a {len(shape)}D volume")
    return tuple(max(1, min(int(b), n)) for b, n in zip(block_shape, shape, strict=True))


def _voxel(voxel_size, ndim) -> tuple[float, ...] | None:
    if voxel_size is None:
        return None
    size = tuple(float(v) for v in voxel_size)
    if len(size) != ndim or any(not np.isfinite(v) or v <= 0 for v in size):
        raise ValueError(f"voxel_size must be {ndim} positive numbers (nm); got {voxel_size}")
    return size


# --------------------------------------------------------------------- OME-Zarr


def _write_ome_zarr(src: _Source, tmp: Path, voxel, chunks, progress) -> None:
    import zarr
    from numcodecs import Blosc

    root = zarr.open_group(str(tmp), mode="w-", zarr_format=2)
    plan = pyramid_factors(src.shape, voxel)
    shapes = [src.shape]
    for f in plan:
        shapes.append(tuple(-(-n // k) for n, k in zip(shapes[-1], f, strict=True)))
    level_chunks = [tuple(min(c, n) for c, n in zip(chunks, s, strict=True)) for s in shapes]
    work = [len(_boxes(s, c)) for s, c in zip(shapes, level_chunks, strict=True)]
    total, done = sum(work), 0

    def make(level):
        return root.create_array(
            str(level),
            shape=shapes[level],
            dtype=src.dtype,
            chunks=level_chunks[level],
            compressor=Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )

    array = make(0)
    group = _group_shape(src, level_chunks[0])
    budget = int(np.prod(level_chunks[0], dtype=np.int64))
    fused = None  # level 1 computed from level 0's groups when they hold whole windows
    if plan and all(
        g % f == 0 and (g // f) % c == 0
        for g, f, c in zip(group, plan[0], level_chunks[1], strict=True)
    ):
        fused = make(1)
    for gbox in _boxes(shapes[0], group):
        labels = _read_group(src, gbox, budget)
        for local, box in _within(gbox, level_chunks[0]):
            array[box] = labels[local]
            done += 1
            _report(progress, done, total, "level 0")
        if fused is not None:
            down = mode_downsample(labels, plan[0])
            start = [g.start // f for g, f in zip(gbox, plan[0], strict=True)]
            for local, box in _within(
                tuple(slice(a, a + n) for a, n in zip(start, down.shape, strict=True)),
                level_chunks[1],
            ):
                fused[box] = down[local]
                done += 1
                _report(progress, done, total, "level 1")
        del labels
    for level, factors in enumerate(plan, start=1):
        if level == 1 and fused is not None:
            array = fused
            continue
        previous, array = array, make(level)
        for box in _boxes(shapes[level], level_chunks[level]):
            source_box = tuple(
                slice(s.start * f, min(s.stop * f, n))
                for s, f, n in zip(box, factors, previous.shape, strict=True)
            )
            down = mode_downsample(np.asarray(previous[source_box]), factors)
            array[box] = down[tuple(slice(0, s.stop - s.start) for s in box)]
            done += 1
            _report(progress, done, total, f"level {level}")

    axes = ["z", "y", "x"][-len(src.shape) :]
    scales, scale = [], list(voxel) if voxel is not None else [1.0] * len(src.shape)
    for level in range(len(shapes)):
        if level:
            scale = [s * f for s, f in zip(scale, plan[level - 1], strict=True)]
        scales.append([float(s) for s in scale])
    unit = {"unit": "nanometer"} if voxel is not None else {}
    root.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "name": tmp.name[1:].rsplit(".tmp-", 1)[0],  # the destination's name
                    "axes": [{"name": a, "type": "space", **unit} for a in axes],
                    "datasets": [
                        {
                            "path": str(level),
                            "coordinateTransformations": [{"type": "scale", "scale": s}],
                        }
                        for level, s in enumerate(scales)
                    ],
                    "type": "mode",
                    "metadata": {"description": "mode (most frequent label) of each window"},
                }
            ],
            "image-label": {"version": "0.4"},
        }
    )


def _report(progress, done, total, what) -> None:
    if progress is not None:
        progress(done / max(total, 1), f"{what} {done}/{total}")


# ------------------------------------------------------------------------- TIFF


def _write_tiff(src: _Source, tmp: Path, voxel, chunks, progress) -> None:
    import tifffile

    shape = src.shape if len(src.shape) == 3 else (1, *src.shape)
    plane_bytes = shape[1] * shape[2] * src.dtype.itemsize
    bigtiff = plane_bytes * shape[0] > BIGTIFF_BYTES - 2**25  # headroom for tags
    imagej = not bigtiff and src.dtype in (np.dtype(np.uint8), np.dtype(np.uint16))
    if chunks is not None and len(src.shape) == 3:
        depth = chunks[0]
    else:
        depth = max(1, min(64, _TIFF_BLOCK_BYTES // max(plane_bytes, 1)))
    boxes = _boxes(shape, (depth, shape[1], shape[2]))

    def planes() -> Iterator[np.ndarray]:
        for i, box in enumerate(boxes):
            block = src.block(box if len(src.shape) == 3 else box[1:])
            _report(progress, i + 1, len(boxes), "planes")
            yield from block.reshape((-1, shape[1], shape[2]))

    kwargs: dict[str, Any] = {}
    if imagej:
        meta: dict[str, Any] = {"axes": "ZYX" if len(src.shape) == 3 else "YX"}
        if voxel is not None:
            kwargs["resolution"] = (1e3 / voxel[-1], 1e3 / voxel[-2])
            meta["unit"] = "um"
            if len(src.shape) == 3:
                meta["spacing"] = voxel[0] / 1e3
        kwargs.update(imagej=True, metadata=meta)
    else:  # ImageJ takes neither BigTIFF nor 32/64-bit integers: OME metadata
        ome = src.dtype.itemsize < 8  # OME-XML has no 64-bit integer pixel type
        meta = {"axes": "ZYX" if len(src.shape) == 3 else "YX"}
        if voxel is not None:
            for ax, v in zip("ZYX"[-len(src.shape) :], voxel, strict=True):
                meta[f"PhysicalSize{ax}"] = v
                meta[f"PhysicalSize{ax}Unit"] = "nm"
            if not ome:
                meta = {"voxel_size_nm": list(voxel)}
            kwargs["resolution"] = (1e7 / voxel[-1], 1e7 / voxel[-2])
            kwargs["resolutionunit"] = "CENTIMETER"
        kwargs.update(ome=ome, metadata=meta)
    tifffile.imwrite(
        tmp,
        data=planes(),
        shape=src.shape,
        dtype=src.dtype,
        bigtiff=bigtiff,
        compression="zlib",
        photometric="minisblack",
        **kwargs,
    )


# ------------------------------------------------------------------------- HDF5


def _write_hdf5(src: _Source, tmp: Path, voxel, chunks, progress) -> None:
    import h5py

    with h5py.File(tmp, "w-") as f:
        ds = f.create_dataset(
            "labels",
            shape=src.shape,
            dtype=src.dtype,
            chunks=chunks,
            compression="gzip",
            compression_opts=4,
            shuffle=True,
            fillvalue=0,
        )
        if voxel is not None:
            ds.attrs["voxel_size"] = np.asarray(voxel, dtype=np.float64)
            ds.attrs["resolution"] = np.asarray(voxel, dtype=np.float64)
            ds.attrs["unit"] = "nm"
        group = _group_shape(src, chunks)
        budget = int(np.prod(chunks, dtype=np.int64))
        total, done = len(_boxes(src.shape, chunks)), 0
        for gbox in _boxes(src.shape, group):
            labels = _read_group(src, gbox, budget)
            for local, box in _within(gbox, chunks):
                ds[box] = labels[local]
                done += 1
                _report(progress, done, total, "blocks")


_WRITERS = {"ome-zarr": _write_ome_zarr, "tiff": _write_tiff, "hdf5": _write_hdf5}


def export_labels(
    labels: Any | Callable[[tuple[slice, ...]], np.ndarray],
    dest,
    *,
    voxel_size: Sequence[float] | None = None,
    overwrite: bool = False,
    block_shape: Sequence[int] | None = None,
    progress: Callable[[float, str], None] | None = None,
    shape: Sequence[int] | None = None,
    dtype: Any = None,
    source_chunks: Sequence[int] | None = None,
) -> Path:
    """Export a label volume to OME-Zarr, TIFF or HDF5, chosen by the suffix of ``dest``.

    The volume is read and written block by block, so one larger than memory
    exports. It is written to a hidden temporary sibling (``.NAME.tmp-xxxx``)
    that is renamed into place at the end: ``dest`` is never half-written, and
    on failure the temporary file is removed.

    Formats
    -------
    ``.ome.zarr`` / ``.zarr``
        OME-Zarr (NGFF 0.4, zarr format 2, Blosc zstd): datasets ``0``, ``1``,
        ... downsampled by 2 with the most frequent label (see
        `pyramid_factors`), axes z/y/x in nanometres.
    ``.tif`` / ``.tiff``
        zlib-compressed TIFF, one page per z plane; ImageJ metadata for
        ``uint8``/``uint16`` (resolution in pixels per µm and ``spacing``),
        OME metadata otherwise (64-bit labels: resolution tags only, so the z
        size is not read back); BigTIFF above 2 GB.
    ``.h5`` / ``.hdf5``
        Dataset ``labels`` (chunked, gzip) with attributes ``voxel_size`` and
        ``resolution`` in nm.

    Parameters
    ----------
    labels : array-like or callable
        Integer labels ``(z, y, x)`` or ``(y, x)``, or a callable
        ``read_block(slices) -> ndarray`` (then give ``shape`` and ``dtype``).
    dest : str or path-like
        The destination.
    voxel_size : sequence of float, optional
        Voxel size in nm, one per axis.
    overwrite : bool, optional
        Replace an existing ``dest`` (only once the new one is complete).
    block_shape : sequence of int, optional
        Chunk and block shape; ``(64, 256, 256)`` (``(512, 512)`` in 2D) by default.
        For TIFF only its z size is used (number of planes read at once).
    progress : callable, optional
        ``progress(fraction, message)``, called after each block.
    shape, dtype : optional
        Shape and dtype of a ``read_block`` callable's volume (``bool`` is
        written as ``uint8``).
    source_chunks : sequence of int, optional
        Chunk shape of the stored volume behind ``labels`` (an array's
        ``chunks`` by default). OME-Zarr and HDF5 exports then read boxes of
        whole source chunks, so no chunk is decompressed twice; every read
        stays within about one block of voxels.

    Returns
    -------
    pathlib.Path
        The written destination.

    Raises
    ------
    ValueError
        For an unsupported suffix, non-integer labels or a bad voxel size.
    FileExistsError
        If ``dest`` exists and ``overwrite`` is False.
    """
    path = check_export_path(dest, overwrite=overwrite)
    fmt = export_format(path)
    src = _Source(labels, shape, dtype, source_chunks)
    voxel = _voxel(voxel_size, len(src.shape))
    chunks = _chunks(src.shape, block_shape)
    tiff_chunks = chunks if block_shape is not None else None
    tmp = temporary_sibling(path)
    try:
        _WRITERS[fmt](src, tmp, voxel, tiff_chunks if fmt == "tiff" else chunks, progress)
        move_into_place(tmp, path, overwrite=overwrite)
    except BaseException:
        remove_path(tmp)
        raise
    return path


def describe_export(path) -> str:
    """Return a one-line description of an exported file (for messages).

    Parameters
    ----------
    path : str or path-like
        An export written by `export_labels`.

    Returns
    -------
    str
        Format, and for OME-Zarr the number of levels.
    """
    path = Path(path)
    fmt = export_format(path)
    if fmt == "ome-zarr":
        attrs = json.loads((path / ".zattrs").read_text())
        n = len(attrs["multiscales"][0]["datasets"])
        return f"OME-Zarr (NGFF 0.4), {n} level{'s' if n > 1 else ''}"
    return {"tiff": "TIFF (zlib)", "hdf5": "HDF5 dataset 'labels' (gzip)"}[fmt]
