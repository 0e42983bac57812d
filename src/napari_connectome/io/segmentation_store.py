"""Save and load a whole segmentation state as one zarr store.

A segmentation store keeps everything the one-click segmentation computed, so
the segmentation at any threshold can be rebuilt without the model or the
watershed: the boundary map, the fragments, the segmentation at the chosen
threshold, the region graph and the full merge order.

Layout (zarr format 2, readable by zarr-python 2 and 3, napari, neuroglancer,
tensorstore and most other zarr tools; every array Blosc-zstd compressed)::

    OUTPUT.zarr/
        .zattrs                 voxel_size (nm), axes, threshold, model, input,
                                napari_connectome_version, created, format, format_version
        boundaries              uint8, boundary probability quantised to 0..255
                                (attrs scale = 1/255, offset = 0: p = scale * value)
        fragments               uint64 fragment ids (0 only outside the tissue mask)
        segmentation            uint32 segment ids at `threshold` (uint64 when they
                                do not fit); table_at(threshold)[fragments]
        region_graph/           one array per RegionGraph field (edges, contact_area,
                                contact_weight, score_sum, max_score, quantile_score,
                                fragment_sizes, fragment_bboxes) and mean_score
        merge_tree/             merge_a, merge_b, merge_score, merge_area;
                                attrs n_fragments

The three volumes have the input's shape and axes ``(z, y, x)`` (``(y, x)`` for
2D) and are chunked per section for anisotropic stacks (``1 x 512 x 512``) and
in ``64 x 256 x 256`` blocks otherwise. Boundaries are stored as 8 bits
because the region graph quantises them to 1/255 anyway: a graph rebuilt from
the stored map is identical.

Writing is atomic: everything goes to a hidden sibling ``.NAME.tmp-XXXXXXXX``
that is renamed into place at the end, so a crash or a cancel never leaves a
half-written store at the output path (a hard kill may leave the hidden
temporary directory behind). An existing output is only replaced with
``overwrite=True``, and only after the new store is complete.

Pure numpy and zarr: no torch, no Qt.

Examples
--------
>>> from napari_connectome.io import read_segmentation_store
>>> stored = read_segmentation_store("out.zarr")  # doctest: +SKIP
>>> labels = stored.segmentation_at(0.3)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.agglomeration import MergeTree, ThresholdedSegmentation, apply_table, segment_table
from ..core.region_graph import RegionGraph
from ._atomic import move_into_place, remove_path, temporary_sibling
from ._common import VolumeError

__all__ = [
    "BOUNDARY_ATTRS",
    "BOUNDARY_SCALE",
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "OutputExistsError",
    "StoredSegmentation",
    "check_output_path",
    "complete_store_attrs",
    "read_segmentation_store",
    "store_chunks",
    "write_segmentation_store",
    "write_tables_and_attrs",
]

#: Value of the root attribute ``format`` that marks a segmentation store.
STORE_FORMAT = "napari-connectome-segmentation"
#: Version of the layout described in this module.
STORE_FORMAT_VERSION = 1
#: Boundary probability of one step of the stored ``uint8`` boundary map.
BOUNDARY_SCALE = 1.0 / 255.0
#: Attributes of the stored ``boundaries`` array (uint8, probability = value x scale).
BOUNDARY_ATTRS = {"scale": BOUNDARY_SCALE, "offset": 0.0, "unit": "boundary probability"}

_VOLUMES = ("boundaries", "fragments", "segmentation")


class OutputExistsError(FileExistsError):
    """The output path exists and ``overwrite`` was not given."""


def _compressor():
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)


def store_chunks(shape, voxel_size=None) -> tuple[int, ...]:
    """Choose the chunk shape of the stored volumes.

    Parameters
    ----------
    shape : tuple of int
        Volume shape, ``(z, y, x)`` or ``(y, x)``.
    voxel_size : sequence of float, optional
        Voxel size in nm; a z size at least twice the in-plane size counts as
        anisotropic.

    Returns
    -------
    tuple of int
        ``(1, 512, 512)`` for anisotropic stacks (one section per chunk),
        ``(64, 256, 256)`` otherwise, ``(512, 512)`` for 2D; clipped to ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 2:
        chunks = (512, 512)
    else:
        aniso = voxel_size is not None and float(voxel_size[0]) >= 2 * min(
            float(voxel_size[1]), float(voxel_size[2])
        )
        chunks = (1, 512, 512) if aniso else (64, 256, 256)
    return tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True))


def check_output_path(path, *, overwrite: bool = False) -> Path:
    """Check that a segmentation store may be written at ``path``.

    Call it before any long computation so that a refused output fails fast.

    Parameters
    ----------
    path : str or path-like
        The store to write.
    overwrite : bool, optional
        Allow replacing an existing store.

    Returns
    -------
    pathlib.Path
        The path.

    Raises
    ------
    OutputExistsError
        If ``path`` exists and ``overwrite`` is False.
    VolumeError
        If ``path`` exists but is a file or a non-empty directory that is not a
        zarr store (never replaced, even with ``overwrite``), or if its parent
        directory does not exist.
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite (--overwrite) to replace it")
        if not path.is_dir() or path.is_symlink():
            raise VolumeError(f"{path} exists and is not a zarr store; refusing to replace it")
        is_store = any((path / name).exists() for name in (".zgroup", ".zarray", "zarr.json"))
        if not is_store and any(path.iterdir()):
            raise VolumeError(
                f"{path} is a non-empty directory, not a zarr store; refusing to replace it"
            )
    if not path.parent.is_dir():
        raise VolumeError(f"cannot write {path}: the folder {path.parent} does not exist")
    return path


def _jsonable(value):
    """Turn attrs into plain JSON types (numpy scalars, tuples, paths)."""

    def default(obj):
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def _version() -> str:
    from .. import __version__

    return str(__version__)


def _slabs(shape, chunks):
    """Slices along the first axis, a whole number of chunks at a time (about 64 MiB)."""
    depth = chunks[0]
    plane = int(np.prod(shape[1:], dtype=np.int64))
    per = max(depth, (2**23 // max(plane, 1)) // depth * depth)
    for start in range(0, shape[0], per):
        yield slice(start, min(start + per, shape[0]))


def _write_volume(group, name, source, dtype, chunks, attrs, convert=None):
    array = group.create_array(
        name,
        shape=tuple(source.shape),
        dtype=dtype,
        chunks=chunks,
        compressors=_compressor(),
        fill_value=0,
    )
    array.attrs.update(attrs)
    for sl in _slabs(tuple(source.shape), chunks):
        block = np.asarray(source[sl])
        array[sl] = convert(block) if convert else block.astype(dtype, copy=False)


def _quantise(block: np.ndarray) -> np.ndarray:
    if block.dtype == np.uint8:
        return block
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        raise ValueError("boundaries contain NaN or infinite values")
    out = np.clip(block, 0.0, 1.0)
    out *= 255.0
    return np.rint(out).astype(np.uint8)


def _write_table(group, name, values) -> None:
    values = np.asarray(values)
    chunks = tuple(max(1, min(n, 1 << 20 if i == 0 else n)) for i, n in enumerate(values.shape))
    array = group.create_array(
        name, shape=values.shape, dtype=values.dtype, chunks=chunks, compressors=_compressor()
    )
    if values.size:
        array[...] = values


def _write_dataclass(group, obj) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, np.ndarray):
            _write_table(group, f.name, value)
        else:
            group.attrs[f.name] = _jsonable(value)


def _segment_dtype(top: int):
    return np.uint32 if top < 2**32 else np.uint64


def _write_all(root, boundaries, fragments, segmentation, graph, tree, attrs, chunks, report):
    shape = tuple(boundaries.shape)
    common = {"axes": attrs["axes"], "voxel_size": attrs["voxel_size"]}
    report(0.0, "writing boundaries")
    _write_volume(
        root,
        "boundaries",
        boundaries,
        np.uint8,
        chunks,
        {**common, **BOUNDARY_ATTRS},
        _quantise,
    )
    report(0.3, "writing fragments")
    _write_volume(root, "fragments", fragments, np.uint64, chunks, common)
    report(0.6, "writing segmentation")
    if segmentation is None:
        table = segment_table(tree, tree.n_fragments, attrs["threshold"])
        top = int(table.max()) if table.size else 0
        dtype = _segment_dtype(top)
        _write_volume(
            root,
            "segmentation",
            fragments,
            dtype,
            chunks,
            {**common, "threshold": attrs["threshold"]},
            lambda block: apply_table(table, block.astype(np.uint64, copy=False)).astype(
                dtype, copy=False
            ),
        )
    else:
        if tuple(segmentation.shape) != shape:
            raise ValueError(
                f"segmentation shape {tuple(segmentation.shape)} does not match {shape}"
            )
        top = int(np.max(segmentation)) if np.size(segmentation) else 0
        _write_volume(
            root,
            "segmentation",
            segmentation,
            _segment_dtype(top),
            chunks,
            {**common, "threshold": attrs["threshold"]},
        )
    report(0.9, "writing region graph and merge tree")
    write_tables_and_attrs(root, graph, tree, attrs)
    report(1.0, "written")


def write_tables_and_attrs(root, graph: RegionGraph, tree: MergeTree, attrs: dict) -> None:
    """Write a store's region graph and merge tree, then its attributes.

    The attributes go last: a store with its attributes is a complete store.

    Parameters
    ----------
    root : zarr.Group
        The (temporary) store being written, its volumes already written.
    graph : RegionGraph
        The region graph.
    tree : MergeTree
        Its merge order.
    attrs : dict
        Root attributes, as :func:`complete_store_attrs` returns them.
    """
    rg = root.create_group("region_graph")
    _write_dataclass(rg, graph)
    _write_table(rg, "mean_score", np.asarray(graph.mean_score, dtype=np.float64))
    _write_dataclass(root.create_group("merge_tree"), tree)
    root.attrs.update(attrs)


def complete_store_attrs(attrs, shape) -> dict:
    """Check a store's root attributes and fill in what every store records.

    Parameters
    ----------
    attrs : mapping
        Attributes; ``voxel_size`` (nm, one per axis) is required.
    shape : sequence of int
        The volume's shape.

    Returns
    -------
    dict
        JSON-ready attributes with ``axes``, ``napari_connectome_version``,
        ``created``, ``format`` and ``format_version`` set when absent, and
        ``voxel_size`` and ``threshold`` (when given) as floats.

    Raises
    ------
    ValueError
        Without a voxel size, or with one that does not fit the shape.
    """
    attrs = dict(attrs or {})
    if "voxel_size" not in attrs:
        raise ValueError("attrs must give the voxel_size (nm)")
    voxel_size = [float(v) for v in attrs["voxel_size"]]
    if len(voxel_size) != len(shape):
        raise ValueError(f"voxel_size {voxel_size} does not match the shape {tuple(shape)}")
    attrs["voxel_size"] = voxel_size
    attrs.setdefault("axes", ["z", "y", "x"][-len(shape) :])
    attrs.setdefault("napari_connectome_version", _version())
    attrs.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    attrs.setdefault("format", STORE_FORMAT)
    attrs.setdefault("format_version", STORE_FORMAT_VERSION)
    if "threshold" in attrs:
        attrs["threshold"] = float(attrs["threshold"])
    return _jsonable(attrs)


def write_segmentation_store(
    path,
    *,
    boundaries,
    fragments,
    segmentation=None,
    graph: RegionGraph,
    tree: MergeTree,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: Callable[[float, str], object] | None = None,
) -> Path:
    """Write a segmentation state to a zarr store, atomically.

    Parameters
    ----------
    path : str or path-like
        The store to write (by convention ending in ``.zarr``).
    boundaries : array-like
        Boundary probabilities in [0, 1] (float), or already quantised ``uint8``
        (0..255); 2D or 3D. Stored as ``uint8`` (see the module docstring).
    fragments : array-like
        Fragment ids, the same shape; stored as ``uint64``.
    segmentation : array-like, optional
        Segment ids, the same shape; stored as ``uint32`` when they fit, else
        ``uint64``. When omitted it is computed slab by slab as
        ``segment_table(tree, ...)[fragments]`` at ``attrs["threshold"]``
        (saves a whole-volume array in memory).
    graph : RegionGraph
        Region graph of the fragments.
    tree : MergeTree
        Merge order of the agglomeration.
    attrs : mapping, optional
        Root attributes: ``voxel_size`` (nm, required), ``threshold`` (required
        when ``segmentation`` is omitted), ``model`` (name and config),
        ``input`` (the source), and anything else JSON-serialisable.
        ``axes``, ``created``, ``napari_connectome_version``, ``format`` and
        ``format_version`` are filled in unless given.
    overwrite : bool, optional
        Replace an existing store, after the new one is complete.
    progress : callable, optional
        ``progress(fraction, message)`` while writing.

    Returns
    -------
    pathlib.Path
        The written store.

    Raises
    ------
    OutputExistsError
        If the output exists and ``overwrite`` is False (checked first).
    VolumeError
        If the output is not replaceable (see :func:`check_output_path`).
    ValueError
        For arrays of different shapes, not 2D/3D, NaN boundaries, or missing attrs.
    """
    path = check_output_path(path, overwrite=overwrite)
    report = progress or (lambda fraction, message: None)
    shape = tuple(int(n) for n in boundaries.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"expected a 2D or 3D segmentation state; got shape {shape}")
    if tuple(fragments.shape) != shape:
        raise ValueError(f"fragments shape {tuple(fragments.shape)} does not match {shape}")
    attrs = complete_store_attrs(attrs, shape)
    if segmentation is None and "threshold" not in attrs:
        raise ValueError("attrs must give the threshold when no segmentation is passed")
    chunks = store_chunks(shape, attrs["voxel_size"])

    import zarr

    tmp = temporary_sibling(path)
    try:
        root = zarr.open_group(str(tmp), mode="w-", zarr_format=2)
        _write_all(root, boundaries, fragments, segmentation, graph, tree, attrs, chunks, report)
        move_into_place(tmp, path, overwrite=overwrite, exists_error=OutputExistsError)
    except BaseException:
        remove_path(tmp)
        raise
    return path


@dataclass
class StoredSegmentation(ThresholdedSegmentation):
    """A segmentation store opened for reading.

    Attributes
    ----------
    path : pathlib.Path
        The store.
    boundaries : zarr.Array
        ``uint8`` boundary map (probability = value / 255), read lazily; see
        :meth:`load_boundaries` for ``float32`` probabilities.
    fragments : zarr.Array
        ``uint64`` fragment ids, read lazily.
    segmentation : zarr.Array
        Segment ids at :attr:`threshold`, read lazily.
    graph : RegionGraph
        The region graph, in memory.
    tree : MergeTree
        The merge order, in memory.
    attrs : dict
        The store's root attributes.
    """

    path: Path
    boundaries: Any
    fragments: Any
    segmentation: Any
    graph: RegionGraph
    tree: MergeTree
    attrs: dict

    @property
    def voxel_size(self) -> tuple[float, ...]:
        """Voxel size in nm."""
        return tuple(float(v) for v in self.attrs["voxel_size"])

    @property
    def threshold(self) -> float:
        """Merge-score threshold of :attr:`segmentation`."""
        return float(self.attrs["threshold"])

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the volumes."""
        return tuple(self.fragments.shape)

    def load_boundaries(self) -> np.ndarray:
        """Read the boundary map as ``float32`` probabilities in [0, 1].

        Returns
        -------
        numpy.ndarray
            ``value * scale + offset`` of the stored map.
        """
        scale = float(self.boundaries.attrs.get("scale", BOUNDARY_SCALE))
        offset = float(self.boundaries.attrs.get("offset", 0.0))
        out = np.asarray(self.boundaries[...]).astype(np.float32)
        out *= np.float32(scale)
        if offset:
            out += np.float32(offset)
        return out


def _read_dataclass(group, cls, what: str, path: Path):
    values = {}
    arrays = set(group.array_keys())
    for f in dataclasses.fields(cls):
        if f.name in arrays:
            values[f.name] = np.asarray(group[f.name][...])
        elif f.name in group.attrs:
            values[f.name] = group.attrs[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise VolumeError(f"{path}: the {what} has no {f.name!r}; the store is incomplete")
    return cls(**values)


def read_segmentation_store(path) -> StoredSegmentation:
    """Open a segmentation store written by :func:`write_segmentation_store`.

    Parameters
    ----------
    path : str or path-like
        The store.

    Returns
    -------
    StoredSegmentation
        The volumes as lazy zarr arrays, the graph and merge tree in memory.

    Raises
    ------
    VolumeError
        If the path does not exist or is not a complete segmentation store.
    """
    import zarr

    path = Path(path).expanduser()
    if not path.exists():
        raise VolumeError(f"no such segmentation store: {path}")
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise VolumeError(f"{path} is not a zarr group: {exc}") from exc
    attrs = dict(root.attrs)
    if attrs.get("format") != STORE_FORMAT:
        raise VolumeError(f"{path} is not a napari-connectome segmentation store")
    if int(attrs.get("format_version", 0)) > STORE_FORMAT_VERSION:
        raise VolumeError(
            f"{path} has store format version {attrs['format_version']}; this version of "
            f"napari-connectome reads up to {STORE_FORMAT_VERSION}: please upgrade"
        )
    members = set(root.array_keys()) | set(root.group_keys())
    missing = [m for m in (*_VOLUMES, "region_graph", "merge_tree") if m not in members]
    if missing:
        raise VolumeError(f"{path}: the store is incomplete, missing {', '.join(missing)}")
    graph = _read_dataclass(root["region_graph"], RegionGraph, "region graph", path)
    tree = _read_dataclass(root["merge_tree"], MergeTree, "merge tree", path)
    tree.n_fragments = int(tree.n_fragments)
    return StoredSegmentation(
        path=path,
        boundaries=root["boundaries"],
        fragments=root["fragments"],
        segmentation=root["segmentation"],
        graph=graph,
        tree=tree,
        attrs=attrs,
    )
