"""Synapse objects from probability maps, and their partners in a segmentation.

Detection (:func:`detect_synapses`): the voxels whose synapse probability
reaches a threshold are grouped into 3D connected components (hysteresis: a
component is kept only when its peak probability reaches ``peak_threshold``,
so one cleft is one object at a moderate threshold while weak blobs without a
confident core are dropped); components smaller than a physical size floor
(nm^3) are dropped; non-maximum suppression
then folds every component whose centre lies within ``nms_distance_nm`` of a
more confident one into that one. Each synapse gets an id (1..n), a position
(the probability-weighted centre, nm), a size (voxels and nm^3) and a
confidence (its mean probability).

Partners (:class:`SynapseTable`): around each synapse a fixed set of *probe*
voxels is kept once, from the prediction:

- contact probes: the synapse's own voxels (both sides of the cleft), each
  weighted by the synapse probability squared (``CONTACT_WEIGHT``; or by the
  postsynaptic-side probability, the network's third channel);
- zone probes: the voxels within ``reach_nm`` of it, each weighted by the
  presynaptic-side probability (the network's second channel) to the power
  ``PRE_POWER``;
- facing probes: from each contact probe, the voxels ``FACING_NM`` (15, 30 and
  45 nm) towards the presynaptic side (up the smoothed presynaptic probability).

The presynaptic segment is the one holding the most presynaptic weight. A
contact probe counts for its segment as far as its facing probes land in the
presynaptic segment (a postsynaptic partner faces the presynaptic neuron
across the cleft; a neighbour the synapse object merely spills into mostly
does not); the postsynaptic segments are the other segments holding at least
``post_fraction`` of the largest other such weight (fly synapses are
polyadic: one presynaptic partner, several postsynaptic ones). Partners
are only ever read from the segmentation *at the probes*, so after a merge
(a new fragment-to-segment table) or a split (new fragment ids in a box) the
table and the connectome are re-derived without any model run
(:meth:`SynapseTable.update`).

Pure numpy/scipy: no torch, no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .synapse_probes import (
    CONTACT_WEIGHT,
    FACING_NM,
    PRE_POWER,
    REACH_NM,
    PartnerProbes,
    check_map_shapes,
    contact_source,
    partner_probes,
)
from .synapse_table import MIN_CONTACTS, POST_FRACTION, SynapseTable

__all__ = [
    "CONTACT_WEIGHT",
    "DETECTION_DEFAULTS",
    "FACING_NM",
    "MIN_CONTACTS",
    "POST_FRACTION",
    "PRE_POWER",
    "REACH_NM",
    "SECTION_NM",
    "PartnerProbes",
    "SynapseDetections",
    "SynapseTable",
    "assign_partners",
    "detect_synapses",
    "effective_peak_threshold",
    "partner_defaults",
    "partner_probes",
]

_FACES_3D = ndi.generate_binary_structure(3, 1)


#: Detection settings of the bundled synapse model, chosen on training data only
#: (ISBI z 0-19, VNC z 0-14, phantoms of seeds 30000-30003) by
#: ``scripts/tune_synapse_detection.py``: the setting whose worse domain (real sections
#: or phantoms, mean F1 / target) is the best, on maps of ``SYNAPSE_AUGMENT`` views
#: (``models.synapse_inference``). Its probabilities are not calibrated
#: (class-balanced loss), hence the high thresholds; the peak threshold keeps a cleft
#: whole at 0.5 while needing a confident core.
DETECTION_DEFAULTS = {
    "threshold": 0.5,
    "peak_threshold": 0.95,
    "min_size_nm3": 5.0e5,
    "nms_distance_nm": 200.0,
}


#: Thickness (nm) given to the pixels of a 2D map: a 2D image counts as one serial
#: section (the bundled model's training sections are 40-50 nm thick), so a size
#: floor in nm^3 means the same for one section as for a volume.
SECTION_NM = 50.0


def _voxel_size(voxel_size, ndim: int) -> np.ndarray:
    vs = np.asarray(voxel_size, float).ravel()
    if vs.size != ndim or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(
            f"voxel_size must be {ndim} positive numbers (nm, one per axis); got {voxel_size!r}"
        )
    return vs


@dataclass
class SynapseDetections:
    """Synapse objects detected in a volume.

    Attributes
    ----------
    labels : numpy.ndarray
        ``uint32`` volume of synapse ids (0 = none), ids ``1..n``.
    ids : numpy.ndarray
        ``(n,)`` ids.
    positions : numpy.ndarray
        ``(n, 3)`` centres in nm ``(z, y, x)`` (voxel index times voxel size).
    sizes : numpy.ndarray
        ``(n,)`` voxel counts.
    volumes_nm3 : numpy.ndarray
        ``(n,)`` volumes in nm^3.
    confidence : numpy.ndarray
        ``(n,)`` mean synapse probability of each object, in ``[0, 1]``.
    voxel_size : tuple of float
        Voxel size in nm.
    """

    labels: np.ndarray
    ids: np.ndarray
    positions: np.ndarray
    sizes: np.ndarray
    volumes_nm3: np.ndarray
    confidence: np.ndarray
    voxel_size: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.ids.size)


def effective_peak_threshold(threshold: float, peak_threshold: float | None) -> float:
    """Return the peak probability a synapse object must reach.

    Parameters
    ----------
    threshold : float
        Probability from which a voxel belongs to a synapse.
    peak_threshold : float or None
        The requested peak threshold (None: none).

    Returns
    -------
    float
        ``peak_threshold``, but never below ``threshold`` (``threshold`` for None).
    """
    return threshold if peak_threshold is None else max(float(peak_threshold), threshold)


def detect_synapses(
    probability: np.ndarray,
    voxel_size,
    *,
    threshold: float = DETECTION_DEFAULTS["threshold"],
    peak_threshold: float | None = DETECTION_DEFAULTS["peak_threshold"],
    min_size_nm3: float = DETECTION_DEFAULTS["min_size_nm3"],
    nms_distance_nm: float = DETECTION_DEFAULTS["nms_distance_nm"],
    section_nm: float = SECTION_NM,
) -> SynapseDetections:
    """Turn a synapse probability map into synapse objects.

    The defaults are :data:`DETECTION_DEFAULTS`, the bundled model's settings.

    Parameters
    ----------
    probability : numpy.ndarray
        ``(z, y, x)`` (or ``(y, x)``) probabilities in ``[0, 1]``.
    voxel_size : sequence of float
        Voxel size in nm, one per axis.
    threshold : float
        Probability from which a voxel belongs to a synapse.
    peak_threshold : float, optional
        A component is kept only when its highest probability reaches this value
        (hysteresis; None or a value below ``threshold``: ``threshold``).
    min_size_nm3 : float
        Components smaller than this physical volume are dropped.
    nms_distance_nm : float
        A component whose centre lies this close to a more confident one is merged
        into it (0: no suppression).
    section_nm : float
        Thickness of a 2D map's pixels, for sizes in nm^3 (:data:`SECTION_NM`; the
        section thickness when the map is one section of a serial-section volume).
        Unused for a 3D map.

    Returns
    -------
    SynapseDetections
        The objects, ids ordered by decreasing confidence (empty when none is found).

    Raises
    ------
    ValueError
        On a map that is not 2D/3D, holds NaN, or a bad parameter.
    """
    prob = np.asarray(probability)
    if prob.ndim not in (2, 3) or prob.dtype.kind not in "fui":
        raise ValueError(
            f"the synapse probability must be a 2D or 3D numeric array; got {prob.ndim}D "
            f"{prob.dtype}"
        )
    vs = _voxel_size(voxel_size, prob.ndim)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive); got {threshold!r}")
    peak = effective_peak_threshold(threshold, peak_threshold)
    if not 0.0 < peak <= 1.0:
        raise ValueError(f"peak_threshold must be in (0, 1]; got {peak_threshold!r}")
    if min_size_nm3 < 0 or nms_distance_nm < 0:
        raise ValueError("min_size_nm3 and nms_distance_nm must be >= 0")
    if not (np.isfinite(section_nm) and section_nm > 0):
        raise ValueError(f"section_nm must be a positive number; got {section_nm!r}")
    if prob.dtype.kind == "f" and not np.isfinite(prob).all():
        raise ValueError("the synapse probability holds NaN or infinite values")
    squeeze = prob.ndim == 2
    if squeeze:
        prob, vs = prob[None], np.concatenate([[float(section_nm)], vs])
    prob = prob.astype(np.float32, copy=False)
    comp, n = ndi.label(prob >= threshold, structure=_FACES_3D)
    index = np.arange(1, n + 1)
    sizes = ndi.sum_labels(np.ones_like(prob), comp, index) if n else np.zeros(0)
    voxel_nm3 = float(np.prod(vs))
    big = sizes * voxel_nm3 >= min_size_nm3
    if n and peak > threshold:
        big &= np.asarray(ndi.maximum(prob, comp, index)) >= peak
    keep = index[big] if n else index
    lut = np.zeros(n + 1, np.int64)
    if keep.size:
        mass = ndi.sum_labels(prob, comp, keep)
        centre = np.array(ndi.center_of_mass(prob, comp, keep), float).reshape(-1, 3) * vs
        conf = mass / sizes[keep - 1]
        order = np.argsort(-conf, kind="stable")
        keep, centre, conf = keep[order], centre[order], conf[order]
        owner = np.arange(keep.size)
        if nms_distance_nm > 0 and keep.size > 1:
            tree = cKDTree(centre)
            for i in range(keep.size):  # most confident first
                if owner[i] != i:
                    continue
                for j in tree.query_ball_point(centre[i], nms_distance_nm):
                    if j > i and owner[j] == j:
                        owner[j] = i
        winners = np.unique(owner)
        new_id = np.zeros(keep.size, np.int64)
        new_id[winners] = np.arange(1, winners.size + 1)
        lut[keep] = new_id[owner]
    labels = lut[comp].astype(np.uint32)
    m = int(labels.max()) if labels.size else 0
    ids = np.arange(1, m + 1, dtype=np.uint32)
    if m:
        count = ndi.sum_labels(np.ones_like(prob), labels, ids)
        mass = ndi.sum_labels(prob, labels, ids)
        centre = np.array(ndi.center_of_mass(prob, labels, ids), float).reshape(-1, 3) * vs
        conf = mass / count
    else:
        count, centre, conf = np.zeros(0), np.zeros((0, 3)), np.zeros(0)
    if squeeze:
        labels, vs = labels[0], vs[1:]
        centre = centre[:, 1:] if centre.size else np.zeros((0, 2))
    return SynapseDetections(
        labels=labels,
        ids=ids,
        positions=np.asarray(centre, float),
        sizes=np.asarray(count, np.int64),
        volumes_nm3=np.asarray(count, float) * voxel_nm3,
        confidence=np.asarray(conf, float),
        voxel_size=tuple(float(v) for v in vs),
    )


def partner_defaults() -> dict:
    """Return the probe settings :func:`assign_partners` uses by default.

    Stored with the synapses (``segment --synapses``), so a store says how its probes
    were built (the share and least weight are stored from the table itself).

    Returns
    -------
    dict
        ``contact_weight``, ``reach_nm``, ``pre_power`` and ``facing_nm``.
    """
    return {
        "contact_weight": CONTACT_WEIGHT,
        "reach_nm": REACH_NM,
        "pre_power": PRE_POWER,
        "facing_nm": list(FACING_NM),
    }


def assign_partners(
    detections: SynapseDetections,
    segmentation,
    presynaptic: np.ndarray | None = None,
    postsynaptic: np.ndarray | None = None,
    *,
    synapse: np.ndarray | None = None,
    table=None,
    contact_weight: str = CONTACT_WEIGHT,
    reach_nm: float = REACH_NM,
    post_fraction: float = POST_FRACTION,
    min_contacts: float = MIN_CONTACTS,
    pre_power: float = PRE_POWER,
    facing_nm: tuple[float, ...] = FACING_NM,
) -> SynapseTable:
    """Find the presynaptic and postsynaptic segments of every synapse.

    Parameters
    ----------
    detections : SynapseDetections
        The synapses (:func:`detect_synapses`).
    segmentation : array-like
        Segment ids (or fragment ids with ``table``) of the same shape.
    presynaptic : numpy.ndarray, optional
        Presynaptic-side probability map (the synapse network's second channel).
    postsynaptic : numpy.ndarray, optional
        Postsynaptic-side probability map (the third channel, when the model has it).
    synapse : numpy.ndarray, optional
        Synapse probability map (the first channel).
    table : numpy.ndarray, optional
        Fragment-to-segment table, when ``segmentation`` holds fragments.
    contact_weight : str
        What weighs each contact probe: ``"synapse_squared"`` (the default,
        :data:`CONTACT_WEIGHT`), the synapse probability squared, or
        ``"postsynaptic"``, the postsynaptic-side probability. When the map it names
        is not given, the other one is used, with a warning (see
        :func:`contact_source`).
    reach_nm, post_fraction, min_contacts, pre_power, facing_nm
        See :func:`partner_probes` and :class:`SynapseTable`.

    Returns
    -------
    SynapseTable
        Synapses with partners; it updates after proofreading (:meth:`SynapseTable.update`).

    Raises
    ------
    ValueError
        If the segmentation is missing or its shape differs from the synapses', if
        a probability map has another shape, or if ``contact_weight`` is unknown.
    """
    if segmentation is None:
        raise ValueError(
            "partners need a segmentation: segment the image first (or choose a "
            "segmentation layer of the same shape)"
        )
    check_map_shapes(
        detections.labels.shape, (("postsynaptic", postsynaptic), ("synapse probability", synapse))
    )
    contact, contact_power = contact_source(synapse, postsynaptic, contact_weight)
    probes = partner_probes(
        detections,
        presynaptic,
        contact,
        contact_power=contact_power,
        reach_nm=reach_nm,
        pre_power=pre_power,
        facing_nm=facing_nm,
    )
    return SynapseTable.from_probes(
        detections,
        probes,
        segmentation,
        table,
        post_fraction=post_fraction,
        min_contacts=min_contacts,
    )
