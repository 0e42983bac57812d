"""Candidate errors at the level a proofreader thinks in: segment pairs and segment cuts.

A *false split* candidate is a pair of adjacent segments with a suggested
merge; a *false merge* candidate is one segment with a suggested split into
two sides (fragment sets).  Single region-graph edges are the wrong unit for
review (a correct merge of two fragments can join two segments still wrongly
merged elsewhere; cutting one edge rarely splits a segment held together by
other edges), so the evidence of every candidate is pooled over all the
region-graph edges between (or inside) the segments involved:

- merge candidates: the contact-weighted mean merge score between the two
  segments (the agglomeration's average linkage), the lowest and highest edge
  scores, the share of contact below the threshold, contact area, sizes, tiny
  orphan pieces and segments that end inside the volume;
- split candidates: the segment's fragment graph is re-agglomerated by average
  linkage (scores as in :func:`~napari_connectome.core.agglomeration.agglomerate`)
  and its last merges, and earlier merges of two large clusters, propose cuts:
  one merged cluster against the rest of the segment; the spectral
  (normalised) cut adds the narrowest bridge between two large parts, and a
  segment in several pieces is cut into them (:mod:`.review_cuts`).  Evidence:
  the linkage score of that merge, the scores and area of the cut edges (thin
  bridges have a small cut against the sides' sizes) and the sizes.

Each candidate carries a prior probability of being wrong (a logistic model of
its features fitted on training volumes, :mod:`.review_prior`) and an importance,
the VOI (bits times voxels) that fixing it changes when the suggested fix is
right: ``a log2((a+b)/a) + b log2((a+b)/b)`` for sides of ``a`` and ``b``
voxels.  Its static score is ``prior * importance``.

:class:`CandidateBuilder` derives the candidates of a
:class:`~napari_connectome.core.proofreading.ProofreadingState` for all
segments or, after an edit, for the segments it changed only.

Pure numpy/scipy: no Qt, no napari, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .agglomeration import edge_merge_scores
from .review_cuts import propose_cuts
from .review_prior import MERGE_FEATURES, SPLIT_FEATURES, prior_probability

__all__ = [
    "MERGE_FEATURES",
    "SPLIT_FEATURES",
    "Candidate",
    "CandidateBuilder",
    "CandidateConfig",
    "pair_entropy",
]


def pair_entropy(a, b):
    """Return ``a log2((a+b)/a) + b log2((a+b)/b)``: the VOI (voxel bits) of joining two sides.

    Parameters
    ----------
    a, b : float or numpy.ndarray
        Sizes of the two sides (voxels).

    Returns
    -------
    float or numpy.ndarray
        The pair entropy, 0 when a side is empty.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    t = a + b
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(a > 0, a * np.log2(t / np.where(a > 0, a, 1)), 0.0) + np.where(
            b > 0, b * np.log2(t / np.where(b > 0, b, 1)), 0.0
        )
    return out if out.ndim else float(out)


def _logit(p):
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class CandidateConfig:
    """How many candidates to derive, and the prior.

    Attributes
    ----------
    threshold : float
        Merge-score threshold of the segmentation (its agglomeration's).
    merge_cap : float
        Segment pairs with a mean merge score above it are not proposed.
    neighbours : int
        Most merge candidates per segment (its lowest-score neighbours).
    split_depth : int
        Most split candidates per segment (those of highest prior x importance).
    split_last : int
        The last merges of a segment's dendrogram always proposed as cuts.
    split_balance : float
        Earlier merges are proposed when both sides hold at least this share of
        the segment's voxels (and more than ``tiny``).
    tiny : int
        Segments up to this many voxels are tiny orphan pieces.
    spectral : bool
        Also propose the spectral (normalised) cut of each segment.
    """

    threshold: float = 0.5
    merge_cap: float = 1.0
    neighbours: int = 12
    split_depth: int = 12
    split_last: int = 4
    split_balance: float = 0.02
    tiny: int = 200
    spectral: bool = True


@dataclass(eq=False)
class Candidate:
    """One candidate error with its suggested fix.

    Attributes
    ----------
    id : str
        Stable key: ``"merge:S+T:H"`` or ``"split:S:H"``, ``H`` a hash of the
        fragment sets (a changed segment gives new candidates, new ids).
    kind : str
        ``"merge"`` (a false split: the fix merges) or ``"split"`` (a false merge).
    segments : tuple of int
        The two segments to merge, or the one segment to split.
    location : tuple of int
        A voxel at the contact (merge) or at the cut (split): where to look.
    bbox : tuple of slice
        Bounding box of the segments involved.
    parts : tuple of numpy.ndarray
        The suggested fix as fragment sets: the fragments of each segment for a
        merge, the two sides of the cut for a split.
    features : numpy.ndarray
        ``MERGE_FEATURES`` or ``SPLIT_FEATURES`` values.
    prior : float
        Prior probability that the segmentation is wrong here (the fix is right).
    importance : float
        VOI (voxel bits) the fix changes: :func:`pair_entropy` of the sides.
    """

    id: str
    kind: str
    segments: tuple
    location: tuple
    bbox: tuple
    parts: tuple = field(repr=False)
    features: np.ndarray = field(repr=False)
    prior: float = 0.5
    importance: float = 0.0

    @property
    def static_score(self) -> float:
        """float: ``prior * importance``."""
        return float(self.prior * self.importance)

    def preview_labels(self, state, bbox=None) -> np.ndarray:
        """Return the suggested fix as labels: side index + 1 per voxel, 0 elsewhere.

        Parameters
        ----------
        state : ProofreadingState
            The state the candidate was derived from.
        bbox : tuple of slice, optional
            Region; the candidate's box by default.

        Returns
        -------
        numpy.ndarray
            ``uint8`` labels: 1 and 2 for the two sides (both segments of a
            merge show as 1, the fix making them one).
        """
        bbox = self.bbox if bbox is None else tuple(bbox)
        crop = np.asarray(state.fragments[bbox]).astype(np.int64)
        lut = np.zeros(max(int(state.n_fragments) + 1, int(crop.max(initial=0)) + 1), np.uint8)
        for i, part in enumerate(self.parts):
            lut[np.asarray(part, dtype=np.int64)] = 1 if self.kind == "merge" else i + 1
        return lut[crop]

    def to_dict(self) -> dict:
        """Return a JSON-ready summary (no fragment lists)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "segments": [int(s) for s in self.segments],
            "location": [int(c) for c in self.location],
            "bbox": [[int(s.start), int(s.stop)] for s in self.bbox],
            "prior": float(self.prior),
            "importance": float(self.importance),
        }


def _hash(*parts) -> str:
    """CRC-32 of fragment sets: ids of candidates stay stable while their segments do."""
    import zlib

    crc = 0
    for ids in parts:
        data = np.ascontiguousarray(np.sort(np.asarray(ids, dtype=np.uint64)))
        crc = zlib.crc32(data.tobytes() + b"|", crc)
    return f"{crc:08x}"


class CandidateBuilder:
    """Derive candidates from a proofreading state; re-derive them for changed segments.

    Parameters
    ----------
    state : ProofreadingState
        The state (read only here).
    config : CandidateConfig, optional
        Limits and prior.
    """

    def __init__(self, state, config: CandidateConfig | None = None):
        self.state = state
        self.config = config or CandidateConfig()
        self._load_graph()

    # ------------------------------------------------------------ graph cache
    def _load_graph(self) -> None:
        state = self.state
        graph = state.graph
        self._n = state.n_fragments
        e = graph.edges.astype(np.int64)
        self._eu, self._ev = e[:, 0], e[:, 1]
        self._w = np.asarray(graph.contact_weight, dtype=np.float64)
        self._area = np.asarray(graph.contact_area, dtype=np.float64)
        self._score = np.clip(edge_merge_scores(graph), 0.0, 1.0)
        self._size = np.asarray(graph.fragment_sizes, dtype=np.int64)
        self._fbox = np.asarray(graph.fragment_bboxes, dtype=np.int64)
        n = self._n
        ends = np.concatenate([self._eu, self._ev])
        idx = np.concatenate([np.arange(len(e))] * 2)
        order = np.argsort(ends, kind="stable")
        self._csr_edges = idx[order]
        self._csr_ptr = np.searchsorted(ends[order], np.arange(n + 2))
        shape = np.asarray(state.fragments.shape)
        self._shape = shape

    def _sync(self) -> None:
        if self.state.n_fragments != self._n:  # a voxel split changed the graph
            self._load_graph()

    def _edges_of(self, fragments: np.ndarray) -> np.ndarray:
        f = np.asarray(fragments, dtype=np.int64)
        f = f[(f > 0) & (f <= self._n)]
        if not len(f):
            return np.zeros(0, np.int64)
        starts, stops = self._csr_ptr[f], self._csr_ptr[f + 1]
        lens = stops - starts
        if not lens.sum():
            return np.zeros(0, np.int64)
        pos = np.repeat(stops - np.cumsum(lens), lens) + np.arange(lens.sum())
        return np.unique(self._csr_edges[pos])

    # ------------------------------------------------------------ derivation
    def derive(self, segments=None) -> list[Candidate]:
        """Derive the candidates of some segments (all by default).

        Merge candidates of a segment pair are derived when either segment is
        listed; split candidates for each listed segment.

        Parameters
        ----------
        segments : iterable of int, optional
            The segments (changed by an edit, say); every segment by default.

        Returns
        -------
        list of Candidate
            The candidates.
        """
        self._sync()
        state = self.state
        table = state.table.astype(np.int64)
        if segments is None:
            edges = np.arange(len(self._eu))
            wanted = None
        else:
            wanted = np.array(sorted({int(s) for s in segments if state.has_segment(s)}))
            if not len(wanted):
                return []
            frags = np.concatenate([state.segment_fragments(s) for s in wanted])
            edges = self._edges_of(frags)
        su, sv = table[self._eu[edges]], table[self._ev[edges]]
        between = (su != sv) & (su > 0) & (sv > 0)
        inside = (su == sv) & (su > 0)
        if wanted is not None:
            inside &= np.isin(su, wanted)
        out = self._merge_candidates(edges[between], su[between], sv[between])
        out += self._split_candidates(edges[inside], su[inside], wanted)
        return out

    def _seg_info(self, s: int):
        st = self.state
        box = st._seg_box[s]  # noqa: SLF001 - sibling module of the state
        return st.segment_size(s), box

    def _touches_border(self, box) -> bool:
        nd = len(self._shape)
        return bool(np.any(box[:nd] == 0) or np.any(box[nd:] >= self._shape))

    def _location(self, edge: int) -> tuple:
        nd = len(self._shape)
        a, b = self._fbox[self._eu[edge]], self._fbox[self._ev[edge]]
        lo, hi = np.maximum(a[:nd], b[:nd]), np.minimum(a[nd:], b[nd:])
        lo2, hi2 = np.minimum(lo, hi), np.maximum(lo, hi)
        centre = (lo2 + hi2) // 2
        return tuple(int(c) for c in np.clip(centre, 0, self._shape - 1))

    def _merge_candidates(self, edges, su, sv) -> list[Candidate]:
        cfg = self.config
        if not len(edges):
            return []
        a, b = np.minimum(su, sv), np.maximum(su, sv)
        key = a * (int(b.max()) + 1) + b
        uniq, inv = np.unique(key, return_inverse=True)
        k = len(uniq)
        w = self._w[edges]
        sc = self._score[edges]
        wsum = np.bincount(inv, weights=w, minlength=k)
        mean = np.bincount(inv, weights=w * sc, minlength=k) / np.maximum(wsum, 1e-12)
        low = np.bincount(inv, weights=w * (sc <= cfg.threshold), minlength=k) / np.maximum(
            wsum, 1e-12
        )
        area = np.bincount(inv, weights=self._area[edges], minlength=k)
        n_e = np.bincount(inv, minlength=k)
        mn = np.full(k, np.inf)
        np.minimum.at(mn, inv, sc)
        mx = np.full(k, -np.inf)
        np.maximum.at(mx, inv, sc)
        # the edge of largest contact of each pair: its location
        order = np.lexsort((-w, inv))
        first = order[np.searchsorted(inv[order], np.arange(k))]
        pa, pb = a[first], b[first]
        keep = mean <= cfg.merge_cap
        # at most `neighbours` lowest-score partners per segment (either side)
        if cfg.neighbours:
            rank = np.zeros(k, bool)
            for side in (pa, pb):
                o = np.lexsort((mean, side))
                s_sorted = side[o]
                starts = np.searchsorted(s_sorted, s_sorted, side="left")
                r = np.arange(k) - starts
                rank[o[r < cfg.neighbours]] = True
            keep &= rank
        out = []
        for i in np.flatnonzero(keep).tolist():
            s, t = int(pa[i]), int(pb[i])
            size_s, box_s = self._seg_info(s)
            size_t, box_t = self._seg_info(t)
            small, large = min(size_s, size_t), max(size_s, size_t)
            small_box = box_s if size_s <= size_t else box_t
            nd = len(self._shape)
            bbox = tuple(
                slice(int(min(box_s[d], box_t[d])), int(max(box_s[nd + d], box_t[nd + d])))
                for d in range(nd)
            )
            feats = np.array(
                [
                    mean[i],
                    mn[i],
                    mx[i],
                    low[i],
                    np.log1p(area[i]),
                    np.log1p(small),
                    np.log1p(large),
                    area[i] / max(small, 1) ** (2 / 3),
                    np.log1p(n_e[i]),
                    float(small <= cfg.tiny),
                    float(not self._touches_border(small_box)),
                ]
            )
            prior = prior_probability("merge", feats, self._merge_prior(mean[i], low[i], small))
            feats = np.append(feats, _logit(prior))
            parts = (self.state.segment_fragments(s), self.state.segment_fragments(t))
            out.append(
                Candidate(
                    id=f"merge:{s}+{t}:{_hash(*parts)}",
                    kind="merge",
                    segments=(s, t),
                    location=self._location(int(edges[first[i]])),
                    bbox=bbox,
                    parts=parts,
                    features=feats,
                    prior=prior,
                    importance=float(pair_entropy(size_s, size_t)),
                )
            )
        return out

    def _merge_prior(self, mean, low, small) -> float:
        t = self.config.threshold
        p = _sigmoid(-(mean - t - 0.08) / 0.05)
        p = max(p, 0.5 * low)
        if small <= self.config.tiny:
            p = max(p, 0.3)
        return float(np.clip(p, 0.01, 0.99))

    def _split_prior(self, link, cut_min) -> float:
        t = self.config.threshold
        p = _sigmoid((link - t + 0.15) / 0.06)
        return float(np.clip(p, 0.01, 0.99))

    def _split_candidates(self, edges, seg, wanted) -> list[Candidate]:
        state = self.state
        out = []
        by_seg = {}
        if len(edges):
            order = np.argsort(seg, kind="stable")
            edges, seg = edges[order], seg[order]
            cuts = np.flatnonzero(np.diff(seg)) + 1
            for chunk in np.split(np.arange(len(seg)), cuts):
                by_seg[int(seg[chunk[0]])] = edges[chunk]
        segments = wanted.tolist() if wanted is not None else list(by_seg)
        if wanted is None:  # disconnected multi-fragment segments without inside edges
            segments = [int(s) for s in state.segments.tolist()]
        for s in segments:
            frags = state.segment_fragments(s).astype(np.int64)
            if len(frags) < 2:
                continue
            cuts = self._cuts_of(s, frags, by_seg.get(s, np.zeros(0, np.int64)))
            seen = set()
            for c in cuts:  # the spectral cut can repeat a dendrogram cut
                if c.id not in seen:
                    seen.add(c.id)
                    out.append(c)
        return out

    def _cuts_of(self, s: int, frags: np.ndarray, edges: np.ndarray) -> list[Candidate]:
        cfg = self.config
        k = len(frags)
        iu = np.searchsorted(frags, self._eu[edges])
        iv = np.searchsorted(frags, self._ev[edges])
        w = self._w[edges]
        sc = self._score[edges]
        sizes = self._size[frags]
        total = int(sizes.sum())
        cuts = propose_cuts(
            k,
            iu,
            iv,
            w,
            sc,
            self._area[edges],
            sizes,
            cfg,
            lambda link: self._split_prior(link, 0.0),
        )
        out = []
        n_cuts = len(cuts)
        nd = len(self._shape)
        for rank, (link, side_a, side_b, source) in enumerate(reversed(cuts)):
            ia = np.asarray(side_a) - 1
            ib = np.asarray(side_b) - 1
            size_a, size_b = int(sizes[ia].sum()), int(sizes[ib].sum())
            small_side = ia if size_a <= size_b else ib
            in_small = np.zeros(k, bool)
            in_small[small_side] = True
            cut = in_small[iu] != in_small[iv]
            small, large = min(size_a, size_b), total - min(size_a, size_b)
            if cut.any():
                cw = w[cut]
                cut_mean = float((cw * sc[cut]).sum() / max(cw.sum(), 1e-12))
                cut_min = float(sc[cut].min())
                cut_area = float(self._area[edges][cut].sum())
                below = float((cw * (sc[cut] <= cfg.threshold)).sum() / max(cw.sum(), 1e-12))
                loc_edge = int(edges[cut][np.argmax(cw)])
                location = self._location(loc_edge)
            else:
                cut_mean, cut_min, cut_area, below = 1.0, 1.0, 0.0, 0.0
                fb = self._fbox[frags[small_side[0]]]
                location = tuple(int(c) for c in (fb[:nd] + fb[nd:]) // 2)
            if source == "spectral":
                link = cut_mean
            part_small = frags[small_side].astype(np.uint64)
            rest = np.setdiff1d(frags, frags[small_side]).astype(np.uint64)
            feats = np.array(
                [
                    link,
                    cut_min,
                    cut_mean,
                    np.log1p(cut_area),
                    np.log1p(small),
                    np.log1p(large),
                    cut_area / max(small, 1) ** (2 / 3),
                    np.log1p(k),
                    float(rank) / max(n_cuts - 1, 1),
                    float(source == "components"),
                    float(source == "spectral"),
                    below,
                ]
            )
            fallback = self._split_prior(link, cut_min) if cut.any() else 0.9
            prior = prior_probability("split", feats, fallback)
            feats = np.append(feats, _logit(prior))
            out.append(
                Candidate(
                    id=f"split:{s}:{_hash(part_small, rest)}",
                    kind="split",
                    segments=(s,),
                    location=location,
                    bbox=self.state.segment_bbox(s),
                    parts=(part_small, rest),
                    features=feats,
                    prior=prior,
                    importance=float(pair_entropy(small, large)),
                )
            )
        return out
