"""Synapses inside a segmentation store: the ``synapses`` id volume and the synapse table.

Layout added to an existing segmentation store (``OUTPUT.zarr``, zarr format 2)::

    OUTPUT.zarr/
        synapses                uint32 synapse ids (0 = none), the volume's shape and
                                chunks; attrs voxel_size, axes
        synapse_table/          attrs: model, settings, partners_from ("fragments" or
                                "segments"), post_fraction, min_contacts, n_synapses,
                                partner_rule (how the probes were built: contact
                                weight, reach, pre power, facing distances; from
                                segment --synapses; absent in older stores)
            ids                 (n,) uint32
            positions           (n, ndim) float64, nm
            confidence          (n,) float64
            volumes_nm3         (n,) float64
            probe_synapse       (m,) int64   row of each partner probe
            probe_coords        (m, ndim) int64 voxel coordinates
            probe_contact       (m,) float64 contact weight (0 on zone and facing probes)
            probe_pre           (m,) float64 presynaptic weight
            probe_facing_from   (m,) int64   contact probe a facing probe faces from
                                             (-1 elsewhere; absent in older stores)
            probe_fragments     (m,) uint64 fragment (or segment) id at each probe
            rows/               the table as written (id, z, y, x, pre, post,
                                confidence, partner_confidence; stores written
                                before partner_confidence held the pair's
                                confidence in confidence), one array per column,
                                for other tools

Partners are re-derived from the probes and any fragment-to-segment table
(e.g. after replaying the proofreading journal), so the stored table never
goes stale: :func:`read_synapse_store` returns a
:class:`~napari_connectome.core.synapses.SynapseTable` to ``update``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.synapses import (
    MIN_CONTACTS,
    POST_FRACTION,
    PartnerProbes,
    SynapseDetections,
    SynapseTable,
)
from ._common import VolumeError

__all__ = ["StoredSynapses", "has_synapses", "read_synapse_store", "write_synapse_store"]

_FIELDS = ("ids", "positions", "confidence", "volumes_nm3")
_PROBES = ("synapse", "coords", "contact", "pre")


def _open(path, mode: str):
    import zarr

    from .segmentation_store import STORE_FORMAT

    path = Path(path).expanduser()
    if not path.exists():
        raise VolumeError(f"no such segmentation store: {path}")
    try:
        root = zarr.open_group(str(path), mode=mode)
    except Exception as exc:
        raise VolumeError(f"{path} is not a zarr group: {exc}") from exc
    if root.attrs.get("format") != STORE_FORMAT:
        raise VolumeError(
            f"{path} is not a napari-connectome segmentation store: synapses are stored "
            "beside a segmentation (run 'napari-connectome segment' first)"
        )
    return path, root


def _put(group, name, values) -> None:
    from .segmentation_store import _write_table

    if name in group:
        del group[name]
    _write_table(group, name, np.ascontiguousarray(values))


def has_synapses(path) -> bool:
    """Tell whether a segmentation store holds synapses.

    Parameters
    ----------
    path : str or path-like
        The store.

    Returns
    -------
    bool
        True when both the ``synapses`` volume and the ``synapse_table`` exist.
    """
    try:
        _, root = _open(path, "r")
    except VolumeError:
        return False
    return "synapses" in root.array_keys() and "synapse_table" in root.group_keys()


def write_synapse_store(
    path,
    detections: SynapseDetections,
    table: SynapseTable | None = None,
    *,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Add (or replace) the synapses of a segmentation store.

    Parameters
    ----------
    path : str or path-like
        An existing segmentation store.
    detections : SynapseDetections
        The synapses; ``detections.labels`` must have the store's shape.
    table : SynapseTable, optional
        Their partners (probes read from the store's fragments, or from segment ids).
    attrs : dict, optional
        Extra attributes of ``synapse_table`` (model, settings, ...).

    Returns
    -------
    pathlib.Path
        The store.

    Raises
    ------
    VolumeError
        If the path is not a segmentation store.
    ValueError
        If the synapses' shape differs from the store's.
    """
    from .segmentation_store import _compressor, _jsonable, store_chunks

    path, root = _open(path, "r+")
    shape = tuple(root["fragments"].shape)
    if tuple(detections.labels.shape) != shape:
        raise ValueError(
            f"the synapses have shape {tuple(detections.labels.shape)} but the store's "
            f"volumes have shape {shape}"
        )
    voxel_size = [float(v) for v in root.attrs["voxel_size"]]
    if "synapses" in root:
        del root["synapses"]
    array = root.create_array(
        "synapses",
        shape=shape,
        dtype=np.uint32,
        chunks=store_chunks(shape, voxel_size),
        compressors=_compressor(),
        fill_value=0,
    )
    array.attrs.update({"voxel_size": voxel_size, "axes": root.attrs.get("axes")})
    array[...] = detections.labels.astype(np.uint32, copy=False)
    if "synapse_table" in root:
        del root["synapse_table"]
    group = root.create_group("synapse_table")
    for name in _FIELDS:
        _put(group, name, getattr(detections, name))
    meta = dict(attrs or {})
    meta["n_synapses"] = len(detections)
    if table is not None:
        for name in _PROBES:
            _put(group, f"probe_{name}", getattr(table.probes, name))
        _put(group, "probe_facing_from", table.probes.facing())
        _put(group, "probe_fragments", table.probe_fragments.astype(np.uint64))
        meta["partners_from"] = "fragments" if table.segment_table is not None else "segments"
        meta["post_fraction"] = table.post_fraction
        meta["min_contacts"] = table.min_contacts
        rows = group.create_group("rows")
        written = table.rows()
        for column in written.dtype.names:
            _put(rows, column, written[column])
    group.attrs.update(_jsonable(meta))
    return path


@dataclass
class StoredSynapses:
    """Synapses read from a store.

    Attributes
    ----------
    labels : zarr.Array
        The ``synapses`` id volume (lazy).
    detections : SynapseDetections
        Ids, positions, confidence and volumes (``labels`` is the lazy array).
    table : SynapseTable or None
        Partners derived from the stored probes (None when none were stored).
    attrs : dict
        Attributes of ``synapse_table``.
    """

    labels: Any
    detections: SynapseDetections
    table: SynapseTable | None
    attrs: dict


def read_synapse_store(path, segment_table=None) -> StoredSynapses:
    """Read the synapses of a segmentation store.

    Parameters
    ----------
    path : str or path-like
        The store.
    segment_table : numpy.ndarray, optional
        Fragment-to-segment table to derive partners with (e.g. the proofread one);
        default: the store's own table at its threshold, when partners were read from
        fragments.

    Returns
    -------
    StoredSynapses
        The synapses and their partners.

    Raises
    ------
    VolumeError
        If the store has no synapses (with what to run to add them).
    """
    path, root = _open(path, "r")
    if "synapses" not in root.array_keys() or "synapse_table" not in root.group_keys():
        raise VolumeError(
            f"{path} holds no synapses: run 'napari-connectome segment ... --synapses' "
            "to detect them"
        )
    group = root["synapse_table"]
    attrs = dict(group.attrs)
    values = {name: np.asarray(group[name][...]) for name in _FIELDS}
    voxel_size = tuple(float(v) for v in root.attrs["voxel_size"])
    sizes = np.rint(values["volumes_nm3"] / float(np.prod(voxel_size))).astype(np.int64)
    detections = SynapseDetections(
        labels=root["synapses"],
        ids=values["ids"].astype(np.uint32),
        positions=values["positions"].reshape(-1, len(voxel_size)).astype(float),
        sizes=sizes,
        volumes_nm3=values["volumes_nm3"].astype(float),
        confidence=values["confidence"].astype(float),
        voxel_size=voxel_size,
    )
    table = None
    if "probe_fragments" in group.array_keys():
        probes = PartnerProbes(
            synapse=np.asarray(group["probe_synapse"][...]).astype(np.int64),
            coords=np.asarray(group["probe_coords"][...])
            .astype(np.int64)
            .reshape(-1, len(voxel_size)),
            contact=np.asarray(group["probe_contact"][...]).astype(float),
            pre=np.asarray(group["probe_pre"][...]).astype(float),
            facing_from=(
                np.asarray(group["probe_facing_from"][...]).astype(np.int64)
                if "probe_facing_from" in group.array_keys()
                else None
            ),
        )
        if segment_table is None and attrs.get("partners_from") == "fragments":
            from .segmentation_store import read_segmentation_store

            stored = read_segmentation_store(path)
            segment_table = stored.table_at(stored.threshold)
        table = SynapseTable(
            ids=detections.ids,
            positions=detections.positions,
            confidence=detections.confidence,
            volumes_nm3=detections.volumes_nm3,
            probes=probes,
            probe_fragments=np.asarray(group["probe_fragments"][...]).astype(np.uint64),
            segment_table=None if segment_table is None else np.asarray(segment_table),
            post_fraction=float(attrs.get("post_fraction", POST_FRACTION)),
            min_contacts=float(attrs.get("min_contacts", MIN_CONTACTS)),
        )
        table.derive()
    return StoredSynapses(root["synapses"], detections, table, attrs)
