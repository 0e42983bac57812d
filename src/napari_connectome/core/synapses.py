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
  weighted by the postsynaptic-side probability (the network's third channel;
  1 from a two-channel model);
- zone probes: the voxels within ``reach_nm`` of it, each weighted by the
  squared presynaptic-side probability (the network's second channel).

The presynaptic segment is the one holding the most presynaptic weight; the
postsynaptic segments are the other segments holding at least
``post_fraction`` of the largest other postsynaptic weight (fly synapses
are polyadic: one presynaptic partner, several postsynaptic ones). Partners
are only ever read from the segmentation *at the probes*, so after a merge
(a new fragment-to-segment table) or a split (new fragment ids in a box) the
table and the connectome are re-derived without any model run
(:meth:`SynapseTable.update`).

Pure numpy/scipy: no torch, no Qt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .synapse_probes import PRE_POWER, REACH_NM, PartnerProbes, partner_probes

__all__ = [
    "DETECTION_DEFAULTS",
    "MIN_CONTACTS",
    "POST_FRACTION",
    "PRE_POWER",
    "REACH_NM",
    "PartnerProbes",
    "SynapseDetections",
    "SynapseTable",
    "assign_partners",
    "detect_synapses",
    "effective_peak_threshold",
    "partner_probes",
]

_FACES_3D = ndi.generate_binary_structure(3, 1)

#: Postsynaptic rule of the bundled synapse model (chosen with the partner settings of
#: :mod:`.synapse_probes`): a non-presynaptic segment is postsynaptic when it holds at
#: least this share of the largest non-presynaptic postsynaptic weight, and this much.
POST_FRACTION = 0.25
MIN_CONTACTS = 3

#: Detection settings of the bundled synapse model, chosen on training data only
#: (ISBI z 0-19, VNC z 0-14, phantoms of seeds 30000-30003) by
#: ``scripts/tune_synapse_detection.py``: the setting whose worse domain (real sections
#: or phantoms, mean F1 / target) is the best. Its probabilities are not calibrated
#: (class-balanced loss), hence the high thresholds; the peak threshold keeps a cleft
#: whole at 0.5 while needing a confident core.
DETECTION_DEFAULTS = {
    "threshold": 0.5,
    "peak_threshold": 0.97,
    "min_size_nm3": 5.0e5,
    "nms_distance_nm": 200.0,
}


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
    threshold: float = 0.5,
    peak_threshold: float | None = None,
    min_size_nm3: float = 2.0e5,
    nms_distance_nm: float = 200.0,
) -> SynapseDetections:
    """Turn a synapse probability map into synapse objects.

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
    if prob.dtype.kind == "f" and not np.isfinite(prob).all():
        raise ValueError("the synapse probability holds NaN or infinite values")
    squeeze = prob.ndim == 2
    if squeeze:
        prob, vs = prob[None], np.concatenate([[1.0], vs])
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


@dataclass
class SynapseTable:
    """Synapses with partners that follow the segmentation.

    Build it with :func:`assign_partners` (or :meth:`from_probes`); after
    proofreading call :meth:`update` with the new fragment-to-segment table
    (and, after a voxel split, the fragments and the changed box).

    Attributes
    ----------
    ids, positions, confidence, volumes_nm3 : numpy.ndarray
        As in :class:`SynapseDetections`.
    probes : PartnerProbes
        Where the partners are read.
    probe_fragments : numpy.ndarray
        Fragment (or segment) id at each probe.
    segment_table : numpy.ndarray or None
        Fragment-to-segment table (None: ``probe_fragments`` are segment ids).
    post_fraction : float
        A non-presynaptic segment is postsynaptic when it holds at least this share
        of the largest non-presynaptic postsynaptic weight (the sum of its contact
        probes' postsynaptic probabilities; their count for a two-channel model) and
        at least ``min_contacts`` of it.
    min_contacts : float
        Least postsynaptic weight of a postsynaptic segment.
    pre : numpy.ndarray
        ``(n,)`` presynaptic segment of each synapse (0: none found).
    pre_confidence : numpy.ndarray
        ``(n,)`` share of the presynaptic weight in that segment.
    pairs : numpy.ndarray
        ``(k, 2)`` rows ``(synapse row, postsynaptic segment)``.
    pair_confidence : numpy.ndarray
        ``(k,)`` ``confidence * pre_confidence * post share`` of each pair.
    """

    ids: np.ndarray
    positions: np.ndarray
    confidence: np.ndarray
    volumes_nm3: np.ndarray
    probes: PartnerProbes
    probe_fragments: np.ndarray
    segment_table: np.ndarray | None = None
    post_fraction: float = POST_FRACTION
    min_contacts: float = MIN_CONTACTS
    pre: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    pre_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    pair_confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _groups: tuple | None = field(default=None, init=False, repr=False, compare=False)
    _groups_of: object = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ids.size)

    @classmethod
    def from_probes(
        cls,
        detections: SynapseDetections,
        probes: PartnerProbes,
        fragments,
        table=None,
        **options,
    ) -> SynapseTable:
        """Read the fragment ids at the probes and derive the partners.

        Parameters
        ----------
        detections : SynapseDetections
            The synapses.
        probes : PartnerProbes
            Their probes (:func:`partner_probes`).
        fragments : array-like
            Fragment ids (or segment ids when ``table`` is None), shaped like the
            detections' labels.
        table : numpy.ndarray, optional
            Fragment-to-segment table.
        **options
            ``post_fraction``, ``min_contacts``.

        Returns
        -------
        SynapseTable
            With partners derived.
        """
        if tuple(np.shape(fragments)) != tuple(detections.labels.shape):
            raise ValueError(
                f"the segmentation has shape {tuple(np.shape(fragments))} but the synapses "
                f"were detected in a volume of shape {tuple(detections.labels.shape)}: use "
                "the segmentation of the same image"
            )
        at = _read_at(fragments, probes.coords)
        out = cls(
            ids=detections.ids.copy(),
            positions=detections.positions.copy(),
            confidence=detections.confidence.copy(),
            volumes_nm3=detections.volumes_nm3.copy(),
            probes=probes,
            probe_fragments=at,
            segment_table=None if table is None else np.asarray(table),
            **options,
        )
        out.derive()
        return out

    def update(self, table=None, fragments=None, box=None) -> None:
        """Re-derive the partners after a proofreading edit (no model run).

        Parameters
        ----------
        table : numpy.ndarray, optional
            The new fragment-to-segment table (after a merge or split).
        fragments : array-like, optional
            The fragments volume, when a split rewrote fragment ids.
        box : tuple of slice, optional
            Where the fragments changed (default: everywhere).
        """
        if table is not None:
            self.segment_table = np.asarray(table)
        if fragments is not None:
            coords = self.probes.coords
            inside = np.ones(len(coords), bool)
            if box is not None:
                for axis, s in enumerate(box):
                    start = 0 if s.start is None else s.start
                    stop = np.iinfo(np.int64).max if s.stop is None else s.stop
                    inside &= (coords[:, axis] >= start) & (coords[:, axis] < stop)
            if inside.any():
                self.probe_fragments = self.probe_fragments.copy()
                self.probe_fragments[inside] = _read_at(fragments, coords[inside])
                self._regroup(np.unique(self.probes.synapse[inside]))
        self.derive()

    def _regroup(self, affected=None) -> None:
        """Sum the probe weights per (synapse, fragment), for all or some synapses."""
        syn, frag = self.probes.synapse, self.probe_fragments
        self._groups_of = frag  # a new probe_fragments array invalidates the groups
        if affected is None or self._groups is None:
            self._groups = _group(syn, frag, self.probes.pre, self.probes.contact)
            return
        redo = np.isin(syn, affected)
        fresh = _group(syn[redo], frag[redo], self.probes.pre[redo], self.probes.contact[redo])
        keep = ~np.isin(self._groups[0], affected)
        self._groups = tuple(
            np.concatenate([old[keep], new]) for old, new in zip(self._groups, fresh, strict=True)
        )

    def segments_at_probes(self) -> np.ndarray:
        """Segment id at every probe (0 outside any segment)."""
        frag = self.probe_fragments
        if self.segment_table is None:
            return frag.astype(np.uint64, copy=False)
        table = self.segment_table
        out = np.zeros(frag.shape, np.uint64)
        ok = frag < table.size
        out[ok] = table[frag[ok]]
        return out

    def derive(self) -> None:
        """Compute ``pre``, ``pre_confidence``, ``pairs`` and ``pair_confidence``."""
        n = len(self)
        if self._groups is None or self._groups_of is not self.probe_fragments:
            self._regroup()
        f_syn, f_frag, f_pre, f_con = self._groups  # per (synapse, fragment): few rows
        if self.segment_table is None:
            seg = f_frag.astype(np.uint64, copy=False)
        else:
            table = self.segment_table
            seg = np.zeros(f_frag.shape, np.uint64)
            ok = f_frag < table.size
            seg[ok] = table[f_frag[ok]]
        valid = seg != 0
        g_syn, g_seg, g_pre, g_con = _group(f_syn[valid], seg[valid], f_pre[valid], f_con[valid])
        total_pre = np.bincount(g_syn, weights=g_pre, minlength=n)
        # presynaptic: the group with the largest presynaptic weight of its synapse
        # (stable sort: on a tie the smaller segment id wins)
        order = np.lexsort((-g_pre, g_syn))
        first = np.ones(order.size, bool)
        first[1:] = g_syn[order][1:] != g_syn[order][:-1]
        top = order[first]
        is_pre = np.zeros(g_syn.size, bool)
        is_pre[top[g_pre[top] > 0]] = True
        pre = np.zeros(n, np.uint64)
        pre[g_syn[is_pre]] = g_seg[is_pre]
        pre_conf = np.zeros(n)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(total_pre[g_syn] > 0, g_pre / total_pre[g_syn], 0.0)
        pre_conf[g_syn[is_pre]] = share[is_pre]
        # postsynaptic: other groups with enough postsynaptic weight
        cand = ~is_pre
        best_con = np.zeros(n)
        np.maximum.at(best_con, g_syn[cand], g_con[cand])
        post = (
            cand & (g_con >= self.min_contacts) & (g_con >= self.post_fraction * best_con[g_syn])
        )
        rows = g_syn[post]
        self.pre, self.pre_confidence = pre, pre_conf
        self.pairs = np.stack([rows.astype(np.uint64), g_seg[post]], axis=1).reshape(-1, 2)
        strength = np.minimum(1.0, g_con[post] / np.maximum(best_con[rows], 1e-12))
        self.pair_confidence = self.confidence[rows] * pre_conf[rows] * strength

    def rows(self) -> np.ndarray:
        """Return the table, one row per (synapse, postsynaptic partner).

        Returns
        -------
        numpy.ndarray
            Structured array with fields ``id, z, y, x`` (nm), ``pre, post`` (segment
            ids; a synapse without any postsynaptic partner has one row with
            ``post = 0``) and ``confidence`` (of the pair).
        """
        dtype = [
            ("id", np.uint32),
            ("z", float),
            ("y", float),
            ("x", float),
            ("pre", np.uint64),
            ("post", np.uint64),
            ("confidence", float),
        ]
        n = len(self)
        syn = self.pairs[:, 0].astype(np.int64)
        lonely = np.setdiff1d(np.arange(n), syn)
        rows_syn = np.concatenate([syn, lonely])
        posts = np.concatenate([self.pairs[:, 1], np.zeros(lonely.size, np.uint64)])
        conf = np.concatenate([self.pair_confidence, self.confidence[lonely] * 0.0])
        order = np.lexsort((posts, rows_syn))
        rows_syn, posts, conf = rows_syn[order], posts[order], conf[order]
        out = np.zeros(rows_syn.size, dtype)
        out["id"] = self.ids[rows_syn]
        pos = self.positions[rows_syn]
        if pos.shape[1] == 2:
            pos = np.concatenate([np.zeros((len(pos), 1)), pos], axis=1)
        out["z"], out["y"], out["x"] = pos[:, 0], pos[:, 1], pos[:, 2]
        out["pre"] = self.pre[rows_syn]
        out["post"] = posts
        out["confidence"] = conf
        return out


def _group(syn, key, pre_w, con_w):
    """Sum ``pre_w`` and ``con_w`` per (``syn``, ``key``) pair."""
    order = np.lexsort((key, syn))
    syn, key, pre_w, con_w = syn[order], key[order], pre_w[order], con_w[order]
    new = np.ones(syn.size, bool)
    new[1:] = (syn[1:] != syn[:-1]) | (key[1:] != key[:-1])
    starts = np.flatnonzero(new)
    if not starts.size:
        return syn[:0], key[:0], pre_w[:0].astype(float), con_w[:0].astype(float)
    return (
        syn[starts],
        key[starts],
        np.add.reduceat(pre_w.astype(float), starts),
        np.add.reduceat(con_w.astype(float), starts),
    )


def _read_at(volume, coords: np.ndarray) -> np.ndarray:
    if len(coords) == 0:
        return np.zeros(0, np.uint64)
    if isinstance(volume, np.ndarray):
        return volume[tuple(coords.T)].astype(np.uint64)
    lo, hi = coords.min(axis=0), coords.max(axis=0) + 1  # lazy arrays: one box read
    block = np.asarray(volume[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))])
    return block[tuple((coords - lo).T)].astype(np.uint64)


def assign_partners(
    detections: SynapseDetections,
    segmentation,
    presynaptic: np.ndarray | None = None,
    postsynaptic: np.ndarray | None = None,
    *,
    table=None,
    reach_nm: float = REACH_NM,
    post_fraction: float = POST_FRACTION,
    min_contacts: float = MIN_CONTACTS,
    pre_power: float = PRE_POWER,
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
    table : numpy.ndarray, optional
        Fragment-to-segment table, when ``segmentation`` holds fragments.
    reach_nm, post_fraction, min_contacts, pre_power
        See :func:`partner_probes` and :class:`SynapseTable`.

    Returns
    -------
    SynapseTable
        Synapses with partners; it updates after proofreading (:meth:`SynapseTable.update`).

    Raises
    ------
    ValueError
        If the segmentation is missing or its shape differs from the synapses'.
    """
    if segmentation is None:
        raise ValueError(
            "partners need a segmentation: segment the image first (or choose a "
            "segmentation layer of the same shape)"
        )
    probes = partner_probes(
        detections, presynaptic, postsynaptic, reach_nm=reach_nm, pre_power=pre_power
    )
    return SynapseTable.from_probes(
        detections,
        probes,
        segmentation,
        table,
        post_fraction=post_fraction,
        min_contacts=min_contacts,
    )
