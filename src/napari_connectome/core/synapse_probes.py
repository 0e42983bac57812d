"""Partner probes: where each synapse reads its partners from a segmentation.

Around each synapse a fixed set of voxels is picked once, from the prediction:
contact probes (the synapse's own voxels, each weighted by the contact map of
:func:`contact_source`: the synapse probability squared by default) and zone probes (voxels within
``reach_nm``, weighted by the presynaptic-side probability raised to
``pre_power``: a power above 1 favours the segment with a few confident
presynaptic voxels over a large segment with many lukewarm ones), and, with a
presynaptic map, facing probes: from each contact probe, the voxels ``FACING_NM`` away
towards the presynaptic side (up the smoothed presynaptic probability). A
postsynaptic partner faces the presynaptic neuron across the cleft; a neighbour
the synapse object merely spills into mostly does not. See
:class:`~napari_connectome.core.synapses.SynapseTable`.

Pure numpy/scipy.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "CONTACT_WEIGHT",
    "CONTACT_WEIGHTS",
    "FACING_NM",
    "PRE_POWER",
    "REACH_NM",
    "PartnerProbes",
    "check_map_shapes",
    "contact_source",
    "partner_probes",
    "probes_in_box",
]

#: Partner defaults of the bundled synapse model, chosen on training phantoms by
#: ``scripts/tune_synapse_detection.py``: the zone radius (nm) around each synapse and
#: the power of the presynaptic probability that weighs each zone probe.
REACH_NM = 60.0
PRE_POWER = 4.0
#: Distances (nm) of the facing probes of each contact probe, towards the presynaptic
#: side (chosen with the settings above), and the smoothing (nm) of the presynaptic
#: map that gives that direction.
FACING_NM = (15.0, 30.0, 45.0)
FACING_SMOOTHING_NM = 16.0
#: Least rise of the smoothed presynaptic probability over the nearest facing distance
#: for a contact probe to get facing probes (where the map is flat or only noisy, it
#: gives no direction).
FACING_MIN_RISE = 0.02
#: What weighs each contact probe (chosen with the settings above):
#: ``"synapse_squared"``, the synapse probability squared (a segment counts by how
#: confidently the synapse lies in it), or ``"postsynaptic"``, the postsynaptic-side
#: probability (the network's third channel, trained on phantoms only).
CONTACT_WEIGHTS = ("synapse_squared", "postsynaptic")
CONTACT_WEIGHT = "synapse_squared"


def check_map_shapes(shape: tuple, maps) -> None:
    """Refuse a probability map whose shape is not that of the synapse labels.

    Parameters
    ----------
    shape : tuple of int
        Shape of the synapse labels.
    maps : iterable of (str, numpy.ndarray or None)
        Each map with the name the message gives it; None is skipped.

    Raises
    ------
    ValueError
        Naming the first map of another shape.
    """
    for name, volume in maps:
        if volume is not None and np.shape(volume) != tuple(shape):
            raise ValueError(
                f"the {name} map {np.shape(volume)} does not match the synapse labels "
                f"{tuple(shape)}"
            )


def contact_source(
    synapse: np.ndarray | None,
    postsynaptic: np.ndarray | None,
    kind: str = CONTACT_WEIGHT,
) -> tuple[np.ndarray | None, float]:
    """Return the map and the power that weigh each contact probe (see :data:`CONTACT_WEIGHTS`).

    Parameters
    ----------
    synapse : numpy.ndarray or None
        Synapse probability.
    postsynaptic : numpy.ndarray or None
        Postsynaptic-side probability (None from a two-channel model).
    kind : str
        ``"synapse_squared"`` or ``"postsynaptic"``. The map it names may be missing
        (no synapse probability given, or a model without a postsynaptic channel):
        then the other one is used, with a warning, and without either every contact
        weighs 1. (A two-channel model with ``"postsynaptic"`` gets the synapse
        probability squared, not the unit weights of the rule before it.)

    Returns
    -------
    tuple
        ``(map or None, power)``: each contact probe weighs ``map ** power`` (the
        arguments ``contact`` and ``contact_power`` of :func:`partner_probes`).

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`CONTACT_WEIGHTS`.
    """
    if kind not in CONTACT_WEIGHTS:
        raise ValueError(f"contact weight must be one of {CONTACT_WEIGHTS}; got {kind!r}")
    squared, post = (synapse, 2.0), (postsynaptic, 1.0)
    first, second = (squared, post) if kind == "synapse_squared" else (post, squared)
    if first[0] is not None:
        return first
    if second[0] is None:
        return None, 1.0
    other = "postsynaptic" if kind == "synapse_squared" else "synapse_squared"
    warnings.warn(
        f"contact weight {kind!r} needs a map that was not given; using {other!r}",
        stacklevel=2,
    )
    return second


@dataclass
class PartnerProbes:
    """The voxels where each synapse reads its partners from a segmentation.

    Attributes
    ----------
    synapse : numpy.ndarray
        ``(m,)`` index (0-based row of the detections) of each probe's synapse, sorted.
    coords : numpy.ndarray
        ``(m, ndim)`` voxel coordinates.
    contact : numpy.ndarray
        ``(m,)`` contact weight: on contact probes (the synapse's own voxels) 1, or
        the contact map's value to the contact power when one was given; 0 on
        zone probes.
    pre : numpy.ndarray
        ``(m,)`` presynaptic-side weight of each probe (0 on contact probes).
    facing_from : numpy.ndarray or None
        ``(m,)`` for a facing probe, the index of the contact probe it faces from;
        -1 on the other probes. None (or all -1): no facing probes, and every
        contact probe's weight counts as facing the presynaptic segment.
    """

    synapse: np.ndarray
    coords: np.ndarray
    contact: np.ndarray
    pre: np.ndarray
    facing_from: np.ndarray | None = None

    def facing(self) -> np.ndarray:
        """Return ``facing_from``, all -1 when there are no facing probes."""
        if self.facing_from is None:
            return np.full(len(self.synapse), -1, np.int64)
        return self.facing_from


def probes_in_box(coords: np.ndarray, box) -> np.ndarray:
    """Return which probe coordinates lie inside a box.

    Parameters
    ----------
    coords : numpy.ndarray
        ``(m, ndim)`` voxel coordinates.
    box : tuple of slice or None
        One slice per axis (a missing start or stop is open); None: everywhere.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` bool mask.
    """
    inside = np.ones(len(coords), bool)
    for axis, s in enumerate(box or ()):
        if s.start is not None:
            inside &= coords[:, axis] >= s.start
        if s.stop is not None:
            inside &= coords[:, axis] < s.stop
    return inside


def partner_probes(
    detections,
    presynaptic: np.ndarray | None = None,
    contact: np.ndarray | None = None,
    *,
    contact_power: float = 1.0,
    reach_nm: float = REACH_NM,
    max_probes: int = 256,
    seed: int = 0,
    pre_power: float = PRE_POWER,
    facing_nm: tuple[float, ...] = FACING_NM,
) -> PartnerProbes:
    """Pick the probe voxels of every synapse (done once, from the prediction).

    Parameters
    ----------
    detections : SynapseDetections
        The synapses.
    presynaptic : numpy.ndarray, optional
        Presynaptic-side probability of the same shape; without it every zone voxel
        weighs 1 (the presynaptic side is then the segment around the synapse with
        the most zone voxels, a weaker rule) and there are no facing probes.
    contact : numpy.ndarray, optional
        Contact map of the same shape (:func:`contact_source`); each contact probe
        weighs its value to the power ``contact_power`` (without it every contact probe
        weighs 1, and a neighbour the synapse object spills into counts like a
        partner).
    contact_power : float
        That power (2 for the synapse probability, 1 for the postsynaptic one).
    reach_nm : float
        Radius of the zone around each synapse.
    max_probes : int
        Largest number of contact and of zone probes per synapse (a random but
        reproducible subset is kept beyond it).
    seed : int
        Seed of that subset.
    pre_power : float
        Each zone probe weighs ``presynaptic ** pre_power`` (:data:`PRE_POWER` by
        default, chosen on training phantoms: it picks the right presynaptic neuron
        more often than 1).
    facing_nm : tuple of float
        Distances of the facing probes of each contact probe, along the direction in
        which the presynaptic probability (smoothed over ``FACING_SMOOTHING_NM``)
        rises, within the finely sampled axes (in-plane for serial sections). Empty:
        no facing probes.

    Returns
    -------
    PartnerProbes
        The probes.
    """
    labels = detections.labels
    for name, power in (("pre_power", pre_power), ("contact_power", contact_power)):
        if not power > 0:
            raise ValueError(f"{name} must be a positive number; got {power!r}")
    facing_nm = tuple(facing_nm)
    if any(not d > 0 for d in facing_nm):
        raise ValueError(f"facing distances must be positive numbers; got {facing_nm!r}")
    check_map_shapes(labels.shape, (("presynaptic", presynaptic), ("contact weight", contact)))
    facing_nm = facing_nm if presynaptic is not None else ()
    vs = np.asarray(detections.voxel_size, float)
    margin = np.ceil(max((reach_nm, *facing_nm)) / vs).astype(int) + 1
    rng = np.random.default_rng(seed)
    parts: list[tuple] = []
    count = 0
    for row, box in enumerate(ndi.find_objects(labels, max_label=len(detections))):
        if box is None:
            continue
        grown = tuple(
            slice(max(0, s.start - m), min(n, s.stop + m))
            for s, m, n in zip(box, margin, labels.shape, strict=True)
        )
        origin = np.array([s.start for s in grown])
        own = labels[grown] == row + 1
        dist = ndi.distance_transform_edt(~own, sampling=vs)
        zone = (dist > 0) & (dist <= reach_nm)
        for mask, is_contact in ((own, 1), (zone, 0)):
            coords = np.argwhere(mask)
            if len(coords) > max_probes:
                coords = coords[np.sort(rng.choice(len(coords), max_probes, replace=False))]
            side = contact if is_contact else presynaptic
            weight = np.ones(len(coords))
            if side is not None:
                weight = np.asarray(side[grown][tuple(coords.T)], float)
            none = np.zeros(len(coords))
            post_w, pre_w = (
                (weight**contact_power, none) if is_contact else (none, weight**pre_power)
            )
            parts.append((row, coords + origin, post_w, pre_w, np.full(len(coords), -1)))
            if is_contact:
                contact_start, contact_coords = count, coords
            count += len(coords)
        if facing_nm:
            local, source = _facing(presynaptic[grown], contact_coords, vs, facing_nm)
            inside = np.all((local + origin >= 0) & (local + origin < labels.shape), axis=1)
            none = np.zeros(int(inside.sum()))
            parts.append((row, local[inside] + origin, none, none, source[inside] + contact_start))
            count += len(none)
    if not parts:
        nd = labels.ndim
        return PartnerProbes(
            np.zeros(0, np.int64),
            np.zeros((0, nd), np.int64),
            np.zeros(0),
            np.zeros(0),
            np.zeros(0, np.int64),
        )
    return PartnerProbes(
        synapse=np.concatenate([np.full(len(p[1]), p[0], np.int64) for p in parts]),
        coords=np.concatenate([p[1] for p in parts]).astype(np.int64),
        contact=np.concatenate([p[2] for p in parts]),
        pre=np.concatenate([p[3] for p in parts]),
        facing_from=np.concatenate([p[4] for p in parts]).astype(np.int64),
    )


def _facing(presynaptic_box, coords, vs, distances):
    """Facing points of contact probes (box coordinates) and the probe each faces from.

    The direction is the gradient of the smoothed presynaptic probability, in the
    finely sampled axes only (a serial-section volume faces within its sections);
    probes where it rises by less than ``FACING_MIN_RISE`` over the nearest distance
    get no facing points.
    """
    fine = vs <= 2.0 * vs.min()
    sigma = np.where(fine, FACING_SMOOTHING_NM / vs, 0.0)
    smooth = ndi.gaussian_filter(np.asarray(presynaptic_box, np.float32), sigma)
    direction = np.zeros(coords.shape)
    for axis in np.flatnonzero(fine):
        if smooth.shape[axis] > 1:
            grad = np.gradient(smooth, axis=axis)
            direction[:, axis] = grad[tuple(coords.T)] / vs[axis]
    norm = np.linalg.norm(direction, axis=1)
    ok = np.flatnonzero(norm * min(distances) >= FACING_MIN_RISE)
    unit = direction[ok] / norm[ok, None]
    points = [np.rint(coords[ok] + unit * (d / vs)).astype(np.int64) for d in distances]
    return np.concatenate(points), np.tile(ok, len(distances))
