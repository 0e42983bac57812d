"""The review queue: ranked candidate errors, answers, fixes applied as undoable edits.

:class:`ReviewQueue` holds the candidates of a
:class:`~napari_connectome.core.proofreading.ProofreadingState` (from
:class:`~napari_connectome.core.review_candidates.CandidateBuilder`), each with
a status (``pending``, ``accepted``, ``rejected``, ``skipped``), and serves them
best first:

- :meth:`ReviewQueue.next` returns the pending candidate of highest score;
- :meth:`ReviewQueue.accept` applies its suggested fix as a proofreading edit
  (:class:`~napari_connectome.core.edits.MergeEdit`, or a
  :class:`~napari_connectome.core.edits.SplitEdit` seeded in every fragment of
  each side, so the cut is exactly the suggested one), through a
  :class:`~napari_connectome.core.history.History` when given (undoable and
  journaled), and re-derives the candidates of the segments it changed;
- :meth:`ReviewQueue.reject` marks the place correct, :meth:`ReviewQueue.skip`
  puts it aside;
- every answer is a labelled example; :meth:`ReviewQueue.retrain` refits the
  :class:`~napari_connectome.core.review_scorer.ReviewScorer` and re-ranks the
  pending candidates (automatically every ``retrain_every`` answers);
- :meth:`ReviewQueue.observe_edit` keeps the queue consistent after the user's
  own edits (and learns from the merges among them).

Rankings: ``"learned"`` (scorer probability times importance), ``"static"``
(prior times importance) and ``"random"`` (a seeded shuffle).

Pure numpy: no Qt, no napari, no torch.
"""

from __future__ import annotations

import heapq

import numpy as np

from .edits import MergeEdit, SplitEdit
from .review_candidates import Candidate, CandidateBuilder, CandidateConfig
from .review_scorer import ReviewScorer

__all__ = ["RANKINGS", "STATUSES", "ReviewQueue"]

#: Orders the queue can serve candidates in.
RANKINGS = ("learned", "static", "random")
#: Statuses of a candidate.
STATUSES = ("pending", "accepted", "rejected", "skipped")


def _side_key(c: Candidate) -> tuple:
    """Return the key of a split's cut-off side (once rejected, not proposed again)."""
    side = np.sort(np.asarray(c.parts[0], dtype=np.uint64))
    return side.tobytes()


class ReviewQueue:
    """Ranked candidate errors of a proofreading state, with answers and learning.

    Parameters
    ----------
    state : ProofreadingState
        The state to review (changed only by :meth:`accept`).
    ranking : {"learned", "static", "random"}, optional
        Order of the queue.
    seed : int, optional
        Seed of the random order.
    config : CandidateConfig, optional
        Candidate derivation settings (its ``threshold`` should be the
        segmentation's).
    retrain_every : int, optional
        Answers between automatic retrains of the learned ranking (0: never).
    scorer : ReviewScorer, optional
        The learned scorer; a new one by default.
    """

    def __init__(
        self,
        state,
        *,
        ranking: str = "learned",
        seed: int = 0,
        config: CandidateConfig | None = None,
        retrain_every: int = 20,
        scorer: ReviewScorer | None = None,
    ):
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}; got {ranking!r}")
        self.state = state
        self.ranking = ranking
        self.rng = np.random.default_rng(seed)
        self.builder = CandidateBuilder(state, config)
        self.retrain_every = int(retrain_every)
        self.scorer = scorer or ReviewScorer()
        self.candidates: dict[str, Candidate] = {}
        self.status: dict[str, str] = {}
        self.scores: dict[str, float] = {}
        self.answers: list[tuple[Candidate, bool]] = []
        self._by_segment: dict[int, set] = {}
        self._heap: list = []
        self._since_retrain = 0
        self._rejected_cuts: set = set()
        self._rejected_pairs: list = []
        self._seeds: dict[int, tuple[int, ...]] = {}
        self._seed_n = -1
        self._add(self.builder.derive())

    # ------------------------------------------------------------ bookkeeping
    def _score(self, cands: list[Candidate]) -> np.ndarray:
        if not cands:
            return np.zeros(0)
        importance = np.array([c.importance for c in cands])
        if self.ranking == "random":
            return self.rng.random(len(cands))
        if self.ranking == "static":
            return np.array([c.prior for c in cands]) * importance
        return self.scorer.predict(cands) * importance

    def _add(self, cands: list[Candidate]) -> None:
        pairs = {tuple(sorted(c.segments)) for c in cands if c.kind == "merge"}
        known = self._known_merges(pairs)
        fresh = [
            c
            for c in cands
            if self.status.get(c.id) not in ("accepted", "rejected")
            and not (c.kind == "split" and _side_key(c) in self._rejected_cuts)
            and not (c.kind == "merge" and tuple(sorted(c.segments)) in known)
        ]
        for c, s in zip(fresh, self._score(fresh), strict=True):
            self.candidates[c.id] = c
            self.status.setdefault(c.id, "pending")
            self.scores[c.id] = float(s)
            for seg in c.segments:
                self._by_segment.setdefault(int(seg), set()).add(c.id)
            heapq.heappush(self._heap, (-float(s), c.id))

    def _drop_segments(self, segments) -> None:
        for seg in segments:
            for cid in self._by_segment.pop(int(seg), set()):
                c = self.candidates.pop(cid, None)
                if c is None:
                    continue
                self.scores.pop(cid, None)
                if self.status.get(cid) in ("pending", "skipped"):
                    del self.status[cid]
                for other in c.segments:
                    if int(other) != int(seg):
                        self._by_segment.get(int(other), set()).discard(cid)

    def _known_merges(self, pairs: set) -> set:
        """Segment pairs that hold, whole, both sides of a rejected merge.

        Once two segments were answered "not the same neuron", the pair is not
        proposed again while each segment still holds all of its side (it may
        have grown); it is proposed again once one of them lost fragments.
        """
        if not self._rejected_pairs or not pairs:
            return set()
        table = self.state.table
        anchors = np.array([(a[0], b[0]) for a, b in self._rejected_pairs], dtype=np.int64)
        segs = np.sort(table[anchors].astype(np.int64), axis=1)
        out = set()
        for i in range(len(segs)):
            key = (int(segs[i, 0]), int(segs[i, 1]))
            if key not in pairs or key in out:
                continue
            a, b = self._rejected_pairs[i]
            if np.all(table[a] == table[a[0]]) and np.all(table[b] == table[b[0]]):
                out.add(key)
        return out

    def refresh(self, segments) -> None:
        """Re-derive the candidates of segments changed outside the queue.

        Parameters
        ----------
        segments : iterable of int
            Segments an edit changed (removed ones included).
        """
        segments = {int(s) for s in segments}
        self._drop_segments(segments)
        self._add(self.builder.derive([s for s in segments if self.state.has_segment(s)]))

    # ------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(self.candidates)

    def pending(self, kind: str | None = None) -> list[Candidate]:
        """Return the pending candidates, best first.

        Parameters
        ----------
        kind : {"merge", "split"}, optional
            Only candidates of this kind.

        Returns
        -------
        list of Candidate
            Pending candidates sorted by score, highest first.
        """
        ids = [
            i
            for i, st in self.status.items()
            if st == "pending" and (kind is None or self.candidates[i].kind == kind)
        ]
        ids.sort(key=lambda i: -self.scores[i])
        return [self.candidates[i] for i in ids]

    def next(self, kind: str | None = None) -> Candidate | None:
        """Return the pending candidate of highest score (None when none is left).

        Parameters
        ----------
        kind : {"merge", "split"}, optional
            Only candidates of this kind (a filter; slower than no filter).

        Returns
        -------
        Candidate or None
            The next candidate to review; its status stays ``pending``.
        """
        if kind is not None:
            found = self.pending(kind)
            return found[0] if found else None
        heap = self._heap
        while heap:
            score, cid = heap[0]
            if self.status.get(cid) == "pending" and self.scores.get(cid) == -score:
                return self.candidates[cid]
            heapq.heappop(heap)
        return None

    @property
    def progress(self) -> dict:
        """dict: Counts of the answers and an estimate of the errors left.

        Keys: ``reviewed`` (accepted + rejected), ``total``, ``pending``,
        ``accepted``, ``rejected``, ``skipped`` and ``estimated_errors_left``
        (the sum of the pending candidates' probabilities of being wrong).
        """
        counts = dict.fromkeys(STATUSES, 0)
        for st in self.status.values():
            counts[st] += 1
        pend = [self.candidates[i] for i, st in self.status.items() if st == "pending"]
        probs = self.scorer.predict(pend) if pend else np.zeros(0)
        return {
            "reviewed": counts["accepted"] + counts["rejected"],
            "total": sum(counts.values()),
            **counts,
            "estimated_errors_left": float(probs.sum()),
        }

    def acceptance_rate(self, last: int = 20) -> float:
        """Return the share of accepted answers among the last ``last`` answers (nan if none)."""
        recent = self.answers[-last:]
        return float(np.mean([a for _, a in recent])) if recent else float("nan")

    # ------------------------------------------------------------ answers
    def _get(self, cid: str) -> Candidate:
        c = self.candidates.get(cid)
        if c is None:
            raise KeyError(f"there is no current candidate {cid!r} (answered or superseded)")
        return c

    def edit_for(self, cid: str):
        """Return the (not yet applied) proofreading edit of a candidate's suggested fix.

        Parameters
        ----------
        cid : str
            Candidate id.

        Returns
        -------
        Edit
            A :class:`MergeEdit`, or a :class:`SplitEdit` with one seed voxel in
            every fragment of each side (the cut is exactly the suggested one).
        """
        c = self._get(cid)
        if c.kind == "merge":
            return MergeEdit(*c.segments)
        groups = [[self._seed_voxel(int(f)) for f in part] for part in c.parts]
        return SplitEdit(c.segments[0], groups)

    def _seed_voxel(self, fragment: int) -> tuple[int, ...]:
        """One voxel of a fragment, found inside its bounding box only (cached)."""
        n = self.state.n_fragments
        if self._seed_n != n:  # a split made new fragments: voxels may have moved
            self._seeds, self._seed_n = {}, n
        seed = self._seeds.get(fragment)
        if seed is None:
            box = self.state.fragment_bbox(fragment)
            inside = np.argwhere(np.asarray(self.state.fragments[box]) == fragment)
            if len(inside) == 0:
                raise KeyError(f"fragment {fragment} has no voxels")
            seed = tuple(int(v + b.start) for v, b in zip(inside[0], box, strict=True))
            self._seeds[fragment] = seed
        return seed

    def accept(self, cid: str, history=None):
        """Apply a candidate's suggested fix and record the answer "wrong here".

        Parameters
        ----------
        cid : str
            Candidate id.
        history : History, optional
            Apply through it (undoable, journaled when a journal is attached);
            directly on the state otherwise.

        Returns
        -------
        Change
            The change applied (table entries and new segment ids).
        """
        c = self._get(cid)
        edit = self.edit_for(cid)
        if history is not None:
            history.do(edit)
        else:
            self.state.apply(edit)
        change = edit._change  # noqa: SLF001 - the resolved change of a _ResolvedEdit
        self._answer(c, True)
        touched = set(int(s) for s in np.unique(change.table.old)) | set(
            int(s) for s in np.unique(change.table.new)
        )
        touched |= {int(s) for s in c.segments}
        touched.discard(0)
        self.refresh(touched)
        return change

    def reject(self, cid: str) -> None:
        """Record that the segmentation is right at a candidate (its fix is not applied)."""
        self._answer(self._get(cid), False)

    def skip(self, cid: str) -> None:
        """Put a candidate aside: not served by :meth:`next`, not a training example."""
        self._get(cid)
        self.status[cid] = "skipped"

    def _answer(self, c: Candidate, wrong: bool) -> None:
        self.status[c.id] = "accepted" if wrong else "rejected"
        if not wrong:
            self._remember_rejection(c)
        self.answers.append((c, bool(wrong)))
        self._since_retrain += 1
        if (
            self.ranking == "learned"
            and self.retrain_every
            and self._since_retrain >= self.retrain_every
        ):
            self.retrain()

    def _remember_rejection(self, c: Candidate) -> None:
        if c.kind == "split":
            self._rejected_cuts.add(_side_key(c))
        else:
            parts = tuple(np.asarray(p, dtype=np.int64) for p in c.parts)
            self._rejected_pairs.append(parts)

    def observe_edit(self, change, kind: str | None = None, segments=()) -> None:
        """Keep the queue consistent after an edit made outside it, and learn from it.

        Parameters
        ----------
        change : Change
            The change the edit applied (``edit._change`` / journal replay).
        kind : {"merge", "split"}, optional
            What the user did: a merge of segments with a pending merge
            candidate counts as that candidate accepted.
        segments : sequence of int, optional
            The segments the user merged or split.
        """
        segs = [int(s) for s in segments]
        if kind == "merge" and len(segs) == 2:
            for cid in list(self._by_segment.get(segs[0], ())):
                c = self.candidates[cid]
                same = c.kind == "merge" and set(c.segments) == set(segs)
                if same and self.status.get(cid) in ("pending", "skipped"):
                    self._answer(c, True)
        touched = set(int(s) for s in np.unique(change.table.old))
        touched |= set(int(s) for s in np.unique(change.table.new)) | set(segs)
        touched.discard(0)
        self.refresh(touched)

    def retrain(self) -> None:
        """Refit the scorer from all answers and re-rank the pending candidates."""
        self._since_retrain = 0
        if self.answers:
            cands, labels = zip(*self.answers, strict=True)
            self.scorer.fit(list(cands), list(labels))
        if self.ranking != "learned":
            return
        ids = [i for i, st in self.status.items() if st in ("pending", "skipped")]
        cands = [self.candidates[i] for i in ids]
        scores = self._score(cands)
        self.scores.update(zip(ids, scores.tolist(), strict=True))
        self._heap = [(-s, i) for i, s in zip(ids, scores.tolist(), strict=True)]
        heapq.heapify(self._heap)

    def unanswer(self, cid: str, segments) -> None:
        """Take back the last answer to a candidate (its fix was undone): pending again.

        Parameters
        ----------
        cid : str
            Candidate id.
        segments : iterable of int
            Segments the undo changed; their candidates are re-derived.
        """
        self.status.pop(cid, None)
        for i in range(len(self.answers) - 1, -1, -1):
            if self.answers[i][0].id == cid:
                del self.answers[i]
                break
        self.refresh(segments)

    def load_examples(self, candidates, labels) -> None:
        """Add answered candidates that are no longer current as training examples.

        Parameters
        ----------
        candidates : sequence of Candidate
            Candidates answered in an earlier session (e.g. accepted fixes, whose
            segments have changed since).
        labels : sequence of bool
            True where the candidate was wrong (its fix accepted).
        """
        known = {c.id for c, _ in self.answers}
        for c, wrong in zip(candidates, labels, strict=True):
            if c.id not in known:
                self.answers.append((c, bool(wrong)))

    # ------------------------------------------------------------ persistence
    def statuses(self) -> dict:
        """Return the answers as JSON-ready data: ``{id: status}`` of answered/skipped ones.

        Candidate ids are stable for a given state (segment ids are never
        reused), so the statuses apply again to a queue rebuilt on the state
        after the same edits (a replayed journal).
        """
        return {i: s for i, s in self.status.items() if s != "pending"}

    def load_statuses(self, statuses: dict) -> None:
        """Restore statuses saved by :meth:`statuses` (unknown ids are kept for later).

        Parameters
        ----------
        statuses : dict of str to str
            Candidate id -> ``accepted``, ``rejected`` or ``skipped``.
        """
        for cid, st in statuses.items():
            if st not in STATUSES:
                raise ValueError(f"unknown review status {st!r} for {cid!r}")
            self.status[cid] = st
            c = self.candidates.get(cid)
            if c is not None and st in ("accepted", "rejected"):
                self.answers.append((c, st == "accepted"))
                if st == "rejected":
                    self._remember_rejection(c)
