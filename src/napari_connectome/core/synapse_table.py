"""The synapse table: partners read at fixed probes, re-derived after every edit.

:class:`SynapseTable` holds each synapse's probes (see
:mod:`~napari_connectome.core.synapse_probes`) and the fragment id at each; it
sums the probe weights per (synapse, fragment) once, so that a merge (a new
fragment-to-segment table) re-derives every partner from a few rows per
synapse, and a split (new fragment ids in a box) re-reads only the probes in
that box. Built by :func:`~napari_connectome.core.synapses.assign_partners`.

Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .synapse_probes import PartnerProbes, probes_in_box

if TYPE_CHECKING:
    from .synapses import SynapseDetections

__all__ = ["CANDIDATE_DTYPE", "MIN_CONTACTS", "POST_FRACTION", "SYNAPSE_ROW_DTYPE", "SynapseTable"]

#: One row of the synapse table (:meth:`SynapseTable.rows`): a synapse and one of its
#: postsynaptic partners, positions in nm.
SYNAPSE_ROW_DTYPE = np.dtype(
    [
        ("id", np.uint32),
        ("z", float),
        ("y", float),
        ("x", float),
        ("pre", np.uint64),
        ("post", np.uint64),
        ("confidence", float),
        ("partner_confidence", float),
    ]
)

#: Postsynaptic rule of the bundled synapse model (chosen with the partner settings of
#: :mod:`.synapse_probes`): a non-presynaptic segment is postsynaptic when it holds at
#: least this share of the largest non-presynaptic postsynaptic weight, and this much.
POST_FRACTION = 0.18
MIN_CONTACTS = 3

#: One row of :meth:`SynapseTable.candidate_weights`.
CANDIDATE_DTYPE = np.dtype([("synapse", np.int64), ("segment", np.uint64), ("weight", float)])

# A relative tolerance at the cuts: sums of the same weights in another order
# (fragments grouped before or after their segments) must not flip a tie.
_SLACK = 1.0 - 1e-9


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
        of the largest non-presynaptic postsynaptic weight and at least
        ``min_contacts`` of it. That weight is the sum of its contact probes'
        weights (see :func:`~.synapse_probes.contact_source`), each times the
        share of its facing probes that land in the presynaptic segment (times 1
        without facing probes, or for a synapse where no segment reaches
        ``min_contacts`` that way: a synapse always keeps its contacts).
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
            inside = probes_in_box(coords, box)
            if inside.any():
                values = self.probe_fragments.copy()
                values[inside] = _read_at(fragments, coords[inside])
                self.set_probe_fragments(values)
        self.derive()

    def set_probe_fragments(self, values) -> None:
        """Set the fragment id at every probe, regrouping only the synapses that changed.

        Call :meth:`derive` afterwards. Assigning ``probe_fragments`` directly also
        works, but regroups every synapse.

        Parameters
        ----------
        values : array-like
            ``(m,)`` fragment (or segment) ids, one per probe.
        """
        values = np.asarray(values, np.uint64)
        if values.shape != self.probe_fragments.shape:
            raise ValueError(
                f"{values.shape[0] if values.ndim else 0} fragment ids for "
                f"{self.probe_fragments.shape[0]} probes"
            )
        current = self._groups is not None and self._groups_of is self.probe_fragments
        changed = values != self.probe_fragments
        self.probe_fragments = values
        if current and changed.any():
            self._regroup(np.unique(self.probes.synapse[changed]))
        elif current:
            self._groups_of = values

    def _regroup(self, affected=None) -> None:
        """Sum the probe weights per (synapse, fragment), for all or some synapses.

        Two sets of sums: per (synapse, fragment) the presynaptic and contact weights;
        per (synapse, contact probe's fragment, facing probe's fragment) the contact
        weight that faces that fragment (each contact probe's weight shared among its
        facing probes).
        """
        syn, frag, probes = self.probes.synapse, self.probe_fragments, self.probes
        self._groups_of = frag  # a new probe_fragments array invalidates the groups
        facing = probes.facing()
        source = np.flatnonzero(facing >= 0)
        origin = facing[source]
        share = probes.contact[origin] / np.bincount(origin, minlength=syn.size)[origin]
        partial = affected is not None and self._groups is not None
        if partial:
            is_affected = np.zeros(len(self), bool)
            is_affected[np.asarray(affected, np.int64)] = True
            redo = is_affected[syn]
        else:
            redo = np.ones(syn.size, bool)
        again = redo[source]
        source, origin, share = source[again], origin[again], share[again]
        fresh = (
            _group((syn[redo], frag[redo]), (probes.pre[redo], probes.contact[redo])),
            _group((syn[source], frag[origin], frag[source]), (share,)),
        )
        if partial:
            fresh = tuple(
                tuple(
                    np.concatenate([old[~is_affected[kept[0]]], new])
                    for old, new in zip(kept, part, strict=True)
                )
                for kept, part in zip(self._groups, fresh, strict=True)
            )
        self._groups = fresh

    def _segments(self, fragments: np.ndarray) -> np.ndarray:
        """Segment ids of fragment ids (0 outside the table)."""
        if self.segment_table is None:
            return fragments.astype(np.uint64, copy=False)
        table = self.segment_table
        out = np.zeros(fragments.shape, np.uint64)
        ok = fragments < table.size
        out[ok] = table[fragments[ok]]
        return out

    def _facing_weight(self, facing, pre, g_syn, g_seg) -> np.ndarray:
        """Contact weight of each (synapse, segment) group facing the presynaptic one."""
        a_syn, a_from, a_to, a_share = facing
        from_seg, to_seg = self._segments(a_from), self._segments(a_to)
        to_pre = pre[a_syn]
        hit = (to_seg == to_pre) & (to_pre != 0) & (from_seg != 0) & (from_seg != to_pre)
        # every facing (synapse, segment) pair is one of the groups (its contact probe
        # is), so summing groups and hits together gives one sum per group, in order
        zero = np.zeros(g_syn.size)
        keys = (np.concatenate([g_syn, a_syn[hit]]), np.concatenate([g_seg, from_seg[hit]]))
        return _group(keys, (np.concatenate([zero, a_share[hit]]),))[2]

    def segments_at_probes(self) -> np.ndarray:
        """Segment id at every probe (0 outside any segment)."""
        return self._segments(self.probe_fragments)

    def derive(self) -> None:
        """Compute ``pre``, ``pre_confidence``, ``pairs`` and ``pair_confidence``."""
        n = len(self)
        g_syn, g_seg, g_con, is_pre = self._weights()
        # postsynaptic: other groups with enough postsynaptic weight
        cand = ~is_pre
        best_con = np.zeros(n)
        np.maximum.at(best_con, g_syn[cand], g_con[cand])
        post = (
            cand
            & (g_con >= self.min_contacts * _SLACK)
            & (g_con >= self.post_fraction * best_con[g_syn] * _SLACK)
        )
        rows = g_syn[post]
        self.pairs = np.stack([rows.astype(np.uint64), g_seg[post]], axis=1).reshape(-1, 2)
        strength = np.minimum(1.0, g_con[post] / np.maximum(best_con[rows], 1e-12))
        self.pair_confidence = self.confidence[rows] * self.pre_confidence[rows] * strength

    def candidate_weights(self) -> np.ndarray:
        """Return the postsynaptic weight of every segment that could be a partner.

        These are the weights the postsynaptic rule cuts (see ``post_fraction``), for
        diagnosing it: one row per (synapse, segment other than its presynaptic one)
        holding any probe, sorted by synapse row and segment id.

        Returns
        -------
        numpy.ndarray
            Structured array with fields ``synapse`` (0-based row), ``segment`` and
            ``weight``.
        """
        g_syn, g_seg, g_con, is_pre = self._weights()
        out = np.zeros(int((~is_pre).sum()), CANDIDATE_DTYPE)
        out["synapse"], out["segment"], out["weight"] = (
            g_syn[~is_pre],
            g_seg[~is_pre],
            g_con[~is_pre],
        )
        return out

    def _weights(self) -> tuple:
        """Sum the probe weights per (synapse, segment) and choose the presynaptic ones.

        Sets ``pre`` and ``pre_confidence``; returns the groups' synapse rows, segments,
        postsynaptic weights (facing weights where the synapse has enough of them) and
        which group is its synapse's presynaptic one.
        """
        n = len(self)
        if self._groups is None or self._groups_of is not self.probe_fragments:
            self._regroup()
        (f_syn, f_frag, f_pre, f_con), facing = self._groups  # few rows per synapse
        seg = self._segments(f_frag)
        valid = seg != 0
        g_syn, g_seg, g_pre, g_con = _group(
            (f_syn[valid], seg[valid]), (f_pre[valid], f_con[valid])
        )
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
        self.pre, self.pre_confidence = pre, pre_conf
        if facing[0].size:  # only the contact weight that faces the presynaptic segment,
            # unless no segment faces it enough (the presynaptic map gave no usable
            # direction there): then every contact counts, as without facing probes
            faced = self._facing_weight(facing, pre, g_syn, g_seg)
            best_faced = np.zeros(n)
            np.maximum.at(best_faced, g_syn[~is_pre], faced[~is_pre])
            g_con = np.where(best_faced[g_syn] >= self.min_contacts * _SLACK, faced, g_con)
        return g_syn, g_seg, g_con, is_pre

    def rows(self) -> np.ndarray:
        """Return the table, one row per (synapse, postsynaptic partner).

        Returns
        -------
        numpy.ndarray
            Structured array with fields ``id, z, y, x`` (nm), ``pre, post`` (segment
            ids; a synapse without any postsynaptic partner has one row with
            ``post = 0``), ``confidence`` (the synapse's detection confidence, the same
            on each of its rows) and ``partner_confidence`` (of the pair; 0 where
            ``post = 0``).
        """
        n = len(self)
        syn = self.pairs[:, 0].astype(np.int64)
        lonely = np.setdiff1d(np.arange(n), syn)
        rows_syn = np.concatenate([syn, lonely])
        posts = np.concatenate([self.pairs[:, 1], np.zeros(lonely.size, np.uint64)])
        conf = np.concatenate([self.pair_confidence, self.confidence[lonely] * 0.0])
        order = np.lexsort((posts, rows_syn))
        rows_syn, posts, conf = rows_syn[order], posts[order], conf[order]
        out = np.zeros(rows_syn.size, SYNAPSE_ROW_DTYPE)
        out["id"] = self.ids[rows_syn]
        pos = self.positions[rows_syn]
        if pos.shape[1] == 2:
            pos = np.concatenate([np.zeros((len(pos), 1)), pos], axis=1)
        out["z"], out["y"], out["x"] = pos[:, 0], pos[:, 1], pos[:, 2]
        out["pre"] = self.pre[rows_syn]
        out["post"] = posts
        out["confidence"] = self.confidence[rows_syn]
        out["partner_confidence"] = conf
        return out


def _group(keys, weights):
    """Sum each of ``weights`` per distinct combination of ``keys``.

    Returns the distinct key rows (sorted, the first key slowest) and the sums:
    ``(*keys, *sums)``.
    """
    order = np.lexsort(keys[::-1])
    keys = tuple(k[order] for k in keys)
    change = np.zeros(order.size, bool)
    change[:1] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    if not starts.size:
        return (*(k[:0] for k in keys), *(np.zeros(0) for _ in weights))
    sums = tuple(np.add.reduceat(np.asarray(w, float)[order], starts) for w in weights)
    return (*(k[starts] for k in keys), *sums)


def _read_at(volume, coords: np.ndarray) -> np.ndarray:
    if len(coords) == 0:
        return np.zeros(0, np.uint64)
    if isinstance(volume, np.ndarray):
        return volume[tuple(coords.T)].astype(np.uint64)
    lo, hi = coords.min(axis=0), coords.max(axis=0) + 1  # lazy arrays: one box read
    block = np.asarray(volume[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))])
    return block[tuple((coords - lo).T)].astype(np.uint64)
