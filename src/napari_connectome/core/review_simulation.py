"""A simulated proofreader: how fast a review queue removes errors, against ground truth.

:func:`simulate_review` serves the candidates of a
:class:`~napari_connectome.core.review_queue.ReviewQueue` in ranked order and
answers each the way a careful proofreader would: it accepts the suggested
fix when applying it lowers the variation of information (VOI) against the
truth, and rejects it otherwise (one decision each).  Accepted fixes are
applied through the queue (proofreading edits on the
:class:`~napari_connectome.core.proofreading.ProofreadingState`), so the queue
re-derives the candidates of the changed segments.  VOI split, merge and total
and the adapted Rand error are recorded before the first decision, every
``every`` decisions, and after the last.

The scores are kept incrementally: :class:`SegmentContingency` holds the
fragment-by-truth overlap counts once and each segment's row of the
segment-by-truth contingency table, so the VOI change of a candidate fix is
computed from the rows of the segments it touches (exact; the same numbers as
:func:`~napari_connectome.core.metrics.evaluate_segmentation`).

:func:`fragment_floor` is the best any table of these fragments can do: every
fragment takes its majority true label.

Pure numpy/scipy: no Qt, no napari, no torch.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .metrics import contingency_table
from .review_candidates import CandidateConfig
from .review_queue import ReviewQueue

__all__ = ["SegmentContingency", "fragment_floor", "simulate_review"]


def _xlogx(x):
    x = np.asarray(x, dtype=np.float64)
    return float(np.dot(x, np.log2(np.where(x > 0, x, 1.0))))


def _fragment_matrix(fragments, truth, n_fragments: int):
    """Sparse ``(N + 1, G)`` voxel counts of each fragment and true label (truth 0 ignored)."""
    frag = np.asarray(fragments)
    gt = np.asarray(truth)
    if frag.shape != gt.shape:
        raise ValueError(
            f"the ground truth has shape {gt.shape}, the segmentation {frag.shape}: "
            "they must be the same volume"
        )
    ct = contingency_table(frag, gt)
    fid = ct.segmentation_ids[ct.rows].astype(np.int64)
    if len(fid) and (fid.min() < 0 or fid.max() > n_fragments):
        raise ValueError("fragment ids outside 0..n_fragments")
    m = sparse.csr_matrix(
        (ct.counts.astype(np.float64), (fid, ct.cols)),
        shape=(n_fragments + 1, len(ct.ground_truth_ids)),
    )
    return m, ct.ground_truth_sizes.astype(np.float64), int(ct.n_voxels)


def _scores_of_matrix(rows, seg_ids, t_sizes, n) -> dict:
    """VOI and adapted Rand from a segment-by-truth count matrix (rows in ``seg_ids`` order)."""
    rows = sparse.csr_matrix(rows)
    s = np.asarray(rows.sum(axis=1)).ravel()
    sum_a_all = _xlogx(rows.data)
    split = (_xlogx(t_sizes) - sum_a_all) / n
    merge = (_xlogx(s) - sum_a_all) / n
    zero = np.asarray(seg_ids) == 0
    c = float(s[zero].sum())
    sq = np.asarray(rows.multiply(rows).sum(axis=1)).ravel()
    sum_ab = float(sq[~zero].sum()) + c / n
    sum_b = float(np.dot(s[~zero], s[~zero])) + c / n
    sum_a = float(np.dot(t_sizes, t_sizes))
    p, r = sum_ab / sum_b, sum_ab / sum_a
    return {
        "voi_split": max(split, 0.0),
        "voi_merge": max(merge, 0.0),
        "voi": max(split, 0.0) + max(merge, 0.0),
        "arand": 1.0 - 2 * p * r / (p + r),
    }


def fragment_floor(fragments, truth, n_fragments: int | None = None) -> dict:
    """Score the best table of these fragments: each takes its majority true label.

    Parameters
    ----------
    fragments : numpy.ndarray
        Fragment ids.
    truth : numpy.ndarray
        Ground truth, same shape (label 0 ignored).
    n_fragments : int, optional
        Largest fragment id; the array's maximum by default.

    Returns
    -------
    dict
        ``voi_split``, ``voi_merge``, ``voi``, ``arand`` of that table.
    """
    n = int(np.max(fragments)) if n_fragments is None else int(n_fragments)
    m, t_sizes, total = _fragment_matrix(fragments, truth, n)
    best = np.asarray(m.argmax(axis=1)).ravel()
    has = np.asarray(m.sum(axis=1)).ravel() > 0
    label = np.where(has, best + 1, len(t_sizes) + 1 + np.arange(n + 1))
    label[0] = 0
    uniq, inv = np.unique(label, return_inverse=True)
    group = sparse.csr_matrix((np.ones(n + 1), (inv, np.arange(n + 1))), shape=(len(uniq), n + 1))
    return _scores_of_matrix(group @ m, uniq, t_sizes, float(total))


class SegmentContingency:
    """Segment-by-truth overlap counts of a proofreading state, kept up to date cheaply.

    Parameters
    ----------
    state : ProofreadingState
        The state (its fragments must not be cut by voxels later).
    truth : numpy.ndarray
        Ground truth, the volume's shape (label 0 ignored).
    """

    def __init__(self, state, truth):
        self.state = state
        self.matrix, self.t_sizes, n = _fragment_matrix(state.fragments, truth, state.n_fragments)
        self.n = float(n)
        self._t_term = _xlogx(self.t_sizes)
        self._sum_t2 = float(np.dot(self.t_sizes, self.t_sizes))
        self.rows: dict = {}
        self.stats: dict = {}
        self.totals = np.zeros(4)  # sum A, sum s log s, sum Q (seg != 0), sum s^2 (seg != 0)
        self.zero = float(self.matrix[0].sum())  # voxels of segment 0 (fragment 0): singletons
        for s in state.segments.tolist():
            self._set(int(s), self._row(state.segment_fragments(s)))

    def _row(self, fragments):
        sub = self.matrix[np.asarray(fragments, dtype=np.int64)]
        cols, inv = np.unique(sub.indices, return_inverse=True)
        return cols, np.bincount(inv, weights=sub.data, minlength=len(cols))

    @staticmethod
    def _stat(counts) -> np.ndarray:
        s = float(counts.sum())
        return np.array([_xlogx(counts), _xlogx([s]), float(np.dot(counts, counts)), s * s])

    def _set(self, seg: int, row) -> None:
        if seg in self.stats:
            self.totals -= self.stats.pop(seg)
            self.rows.pop(seg)
        if row is None or not len(row[0]):
            return
        st = self._stat(row[1])
        self.rows[seg], self.stats[seg] = row, st
        self.totals += st

    def update(self, segments) -> None:
        """Recompute the rows of segments after an edit (removed segments drop out).

        Parameters
        ----------
        segments : iterable of int
            Segments the edit changed.
        """
        for s in {int(x) for x in segments} - {0}:
            has = self.state.has_segment(s)
            self._set(s, self._row(self.state.segment_fragments(s)) if has else None)

    def scores(self) -> dict:
        """Return ``voi_split``, ``voi_merge``, ``voi`` and ``arand`` of the current state."""
        sa, sslogs, sq, s2 = self.totals
        n, c = self.n, self.zero
        split = (self._t_term - sa - _xlogx(self.matrix[0].data)) / n
        merge = (sslogs + _xlogx([c]) - sa - _xlogx(self.matrix[0].data)) / n
        p = (sq + c / n) / (s2 + c / n)
        r = (sq + c / n) / self._sum_t2
        split, merge = max(split, 0.0), max(merge, 0.0)
        return {
            "voi_split": split + 0.0,
            "voi_merge": merge + 0.0,
            "voi": split + merge,
            "arand": 1.0 - 2 * p * r / (p + r),
        }

    def delta(self, candidate) -> float:
        """Return the change of VOI (bits) that applying a candidate's fix would make.

        Parameters
        ----------
        candidate : Candidate
            A current candidate of the state.

        Returns
        -------
        float
            New VOI minus current VOI (negative: the fix helps).
        """
        empty = (np.zeros(0, np.int64), np.zeros(0))
        if candidate.kind == "merge":
            a, b = (self.rows.get(int(s), empty) for s in candidate.segments)
            cols, inv = np.unique(np.concatenate([a[0], b[0]]), return_inverse=True)
            merged = np.bincount(inv, weights=np.concatenate([a[1], b[1]]), minlength=len(cols))
            new = [merged]
            old = [a[1], b[1]]
        else:
            seg = int(candidate.segments[0])
            whole = self.rows.get(seg, empty)
            side_cols, side = self._row(candidate.parts[0])
            rest = whole[1].copy()
            if len(side_cols):
                rest[np.searchsorted(whole[0], side_cols)] -= side
            new = [side, rest[rest > 0]]
            old = [whole[1]]
        d_a = sum(_xlogx(x) for x in new) - sum(_xlogx(x) for x in old)
        d_s = sum(_xlogx([x.sum()]) for x in new) - sum(_xlogx([x.sum()]) for x in old)
        return (d_s - 2 * d_a) / self.n


def simulate_review(
    state,
    truth,
    *,
    ranking: str = "learned",
    seed: int = 0,
    budget: int | None = None,
    every: int = 1,
    config: CandidateConfig | None = None,
    retrain_every: int = 20,
    queue: ReviewQueue | None = None,
) -> dict:
    """Review a state's queue with a simulated proofreader who knows the truth.

    Parameters
    ----------
    state : ProofreadingState
        The state to correct (changed in place by the accepted fixes).
    truth : numpy.ndarray
        Ground truth, the volume's shape (label 0 ignored).
    ranking : {"learned", "static", "random"}, optional
        Order of the queue.
    seed : int, optional
        Seed of the random order.
    budget : int, optional
        Most decisions; the whole queue by default.
    every : int, optional
        Decisions between two points of the curve.
    config : CandidateConfig, optional
        Candidate settings.
    retrain_every : int, optional
        Answers between retrains of the learned ranking.
    queue : ReviewQueue, optional
        A queue built on ``state`` to use instead of a new one.

    Returns
    -------
    dict
        ``curve``: list of ``{"decisions", "voi_split", "voi_merge", "voi",
        "arand"}``, the first before any decision and the last after the
        queue or the budget; ``queue_length``: candidates at the start;
        ``final``: the last point with ``decisions``, ``accepted``,
        ``rejected`` and ``queue_exhausted``; ``floor``: the fragment-level
        floor (:func:`fragment_floor`).
    """
    if every < 1:
        raise ValueError(f"every must be at least 1; got {every}")
    if budget is not None and budget < 0:
        raise ValueError(f"budget must be non-negative; got {budget}")
    truth = np.asarray(truth)
    tracker = SegmentContingency(state, truth)
    if queue is None:
        queue = ReviewQueue(
            state, ranking=ranking, seed=seed, config=config, retrain_every=retrain_every
        )
    queue_length = len(queue)
    curve = [{"decisions": 0, **tracker.scores()}]
    decisions = accepted = 0
    exhausted = False
    while budget is None or decisions < budget:
        cand = queue.next()
        if cand is None:
            exhausted = True
            break
        if tracker.delta(cand) < -1e-12:
            change = queue.accept(cand.id)
            touched = set(np.unique(change.table.old).tolist())
            touched |= set(np.unique(change.table.new).tolist()) | set(cand.segments)
            tracker.update(touched)
            accepted += 1
        else:
            queue.reject(cand.id)
        decisions += 1
        if decisions % every == 0:
            curve.append({"decisions": decisions, **tracker.scores()})
    if not exhausted and queue.next() is None:
        exhausted = True
    if curve[-1]["decisions"] != decisions:
        curve.append({"decisions": decisions, **tracker.scores()})
    final = dict(curve[-1])
    final.update(accepted=accepted, rejected=decisions - accepted, queue_exhausted=exhausted)
    floor = fragment_floor(state.fragments, truth, state.n_fragments)
    return {"curve": curve, "queue_length": queue_length, "final": final, "floor": floor}
