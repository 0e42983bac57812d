"""Partner probes: where each synapse reads its partners from a segmentation.

Around each synapse a fixed set of voxels is picked once, from the prediction:
contact probes (the synapse's own voxels, weighted by the postsynaptic-side
probability when the model predicts one) and zone probes (voxels within
``reach_nm``, weighted by the presynaptic-side probability raised to
``pre_power``: squaring favours the segment with a few confident presynaptic
voxels over a large segment with many lukewarm ones). See
:class:`~napari_connectome.core.synapses.SynapseTable`.

Pure numpy/scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["PRE_POWER", "REACH_NM", "PartnerProbes", "partner_probes"]

#: Partner defaults of the bundled synapse model, chosen on training phantoms by
#: ``scripts/tune_synapse_detection.py``: the zone radius (nm) around each synapse and
#: the power of the presynaptic probability that weighs each zone probe.
REACH_NM = 60.0
PRE_POWER = 2.0


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
        ``(m,)`` postsynaptic weight: on contact probes (the synapse's own voxels) 1,
        or the postsynaptic-side probability when a postsynaptic map was given; 0 on
        zone probes.
    pre : numpy.ndarray
        ``(m,)`` presynaptic-side weight of each probe (0 on contact probes).
    """

    synapse: np.ndarray
    coords: np.ndarray
    contact: np.ndarray
    pre: np.ndarray


def partner_probes(
    detections,
    presynaptic: np.ndarray | None = None,
    postsynaptic: np.ndarray | None = None,
    *,
    reach_nm: float = REACH_NM,
    max_probes: int = 256,
    seed: int = 0,
    pre_power: float = PRE_POWER,
) -> PartnerProbes:
    """Pick the probe voxels of every synapse (done once, from the prediction).

    Parameters
    ----------
    detections : SynapseDetections
        The synapses.
    presynaptic : numpy.ndarray, optional
        Presynaptic-side probability of the same shape; without it every zone voxel
        weighs 1 (the presynaptic side is then the segment around the synapse with
        the most zone voxels, a weaker rule).
    postsynaptic : numpy.ndarray, optional
        Postsynaptic-side probability of the same shape; it weighs each contact probe
        (without it every contact probe weighs 1, and a neighbour the synapse object
        spills into counts like a partner).
    reach_nm : float
        Radius of the zone around each synapse.
    max_probes : int
        Largest number of contact and of zone probes per synapse (a random but
        reproducible subset is kept beyond it).
    seed : int
        Seed of that subset.
    pre_power : float
        Each zone probe weighs ``presynaptic ** pre_power`` (2 by default, chosen on
        training phantoms: it picks the right presynaptic neuron more often than 1).

    Returns
    -------
    PartnerProbes
        The probes.
    """
    labels = detections.labels
    if not pre_power > 0:
        raise ValueError(f"pre_power must be a positive number; got {pre_power!r}")
    for side, volume in (("presynaptic", presynaptic), ("postsynaptic", postsynaptic)):
        if volume is not None and np.shape(volume) != labels.shape:
            raise ValueError(
                f"the {side} map {np.shape(volume)} does not match the synapse labels "
                f"{labels.shape}"
            )
    vs = np.asarray(detections.voxel_size, float)
    margin = np.ceil(reach_nm / vs).astype(int) + 1
    rng = np.random.default_rng(seed)
    parts: list[tuple] = []
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
            side = postsynaptic if is_contact else presynaptic
            weight = np.ones(len(coords))
            if side is not None:
                weight = np.asarray(side[grown][tuple(coords.T)], float)
            none = np.zeros(len(coords))
            post_w, pre_w = (weight, none) if is_contact else (none, weight**pre_power)
            parts.append((row, coords + origin, post_w, pre_w))
    if not parts:
        nd = labels.ndim
        return PartnerProbes(
            np.zeros(0, np.int64), np.zeros((0, nd), np.int64), np.zeros(0), np.zeros(0)
        )
    return PartnerProbes(
        synapse=np.concatenate([np.full(len(c), r, np.int64) for r, c, _, _ in parts]),
        coords=np.concatenate([c for _, c, _, _ in parts]).astype(np.int64),
        contact=np.concatenate([k for _, _, k, _ in parts]),
        pre=np.concatenate([w for _, _, _, w in parts]),
    )
