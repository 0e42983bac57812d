"""What the Review dock does with the review queue, without Qt or napari.

:class:`ReviewSession` ties a :class:`~napari_connectome.core.review_queue.ReviewQueue`
to the proofreading session the Proofread dock has open: a suggested fix is
accepted through the session's :class:`~napari_connectome.core.history.History`
(so it is journaled and undoable like a merge or split by hand), and the
session's own merges, splits, undos and redos keep the queue consistent (a
history listener).  Statuses and answers persist in
``STORE/proofreading/review.json`` beside the journal, written atomically
after every answer.  Also here: the box an item is shown in
(:func:`view_box`), never the whole volume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..core.edits import LockedSegmentError
from ..core.review_candidates import Candidate
from ._proofread_session import Outcome

#: Value of ``format`` in the statuses file.
REVIEW_FORMAT = "napari-connectome-review"
REVIEW_VERSION = 1
#: Kinds of candidates, as the table and the kind filter name them.
KIND_NAMES = {"merge": "false split (merge)", "split": "false merge (split)"}
#: Largest box (voxels per axis, z y x) an item is shown in; the rest of a long
#: segment stays as it is on the proofread layer.
VIEW_EXTENT = (16, 384, 384)

_NO_GRAPH = (
    "it has no region graph to build review candidates from: segment the image first "
    "(Segment dock, then 'From Segment dock' in the Proofread dock, or `napari-connectome "
    "segment RAW OUTPUT.zarr`) and open that store"
)


def review_path(store) -> Path:
    """Return the statuses file of a session store: ``STORE/proofreading/review.json``."""
    return Path(store).expanduser() / "proofreading" / "review.json"


def view_box(candidate: Candidate, shape, extent=VIEW_EXTENT) -> tuple[slice, ...]:
    """Return the box an item is shown in: its bounding box, cut to ``extent`` around its location.

    Parameters
    ----------
    candidate : Candidate
        The item (``bbox`` and ``location``).
    shape : sequence of int
        Shape of the volume.
    extent : sequence of int, optional
        Most voxels per axis (the last ``ndim`` values are used).

    Returns
    -------
    tuple of slice
        A box inside the candidate's bounding box and the volume, holding the location.
    """
    extent = tuple(extent)[-len(shape) :]
    out = []
    for s, c, n, e in zip(candidate.bbox, candidate.location, shape, extent, strict=True):
        lo, hi = max(0, int(s.start)), min(int(n), int(s.stop))
        c = min(max(int(c), lo), max(lo, hi - 1))
        if hi - lo > e:
            lo = min(max(lo, c - e // 2), hi - e)
            hi = lo + e
        out.append(slice(lo, max(hi, lo + 1)))
    return tuple(out)


def _change_of(edit):
    """Return the table change an edit applied (None for locks)."""
    change = getattr(edit, "_change", None)
    return change if change is not None else getattr(edit, "change", None)


def _touched(change) -> set:
    out = {int(s) for s in np.unique(change.table.old)}
    out |= {int(s) for s in np.unique(change.table.new)}
    out.discard(0)
    return out


class ReviewSession:
    """The review queue of an open proofreading session: answers, persistence, learning.

    Parameters
    ----------
    session : ProofreadingSession
        The session the Proofread dock has open (its history is listened to).
    queue : ReviewQueue
        The queue of the session's state.
    path : path-like, optional
        The statuses file; :func:`review_path` of the session's store by default.

    Attributes
    ----------
    current : Candidate or None
        The item on screen.
    kind : str or None
        Only serve candidates of this kind (``"merge"``, ``"split"``); all when None.
    log : list of dict
        Answers in the order given: ``id``, ``status``, ``kind`` (and the
        features, to learn from them after a reopen).
    error : str
        The last error the history listener met ("" when none).
    version : int
        Goes up with every change of the queue (answers, edits, retraining).
    on_change : list of callable
        Called with no argument after the queue followed an edit made elsewhere.
    """

    def __init__(self, session, queue, path=None):
        self.session = session
        self.queue = queue
        self.path = Path(path) if path is not None else review_path(session.store)
        self.current: Candidate | None = None
        self.kind: str | None = None
        self.log: list[dict] = []
        self.error = ""
        self.on_change: list = []
        self.version = 0
        self._log_index: tuple = (-1, -1, {})
        self._progress: tuple = (-1, {})
        self._applying = False
        self._fixes: dict[int, tuple] = {}  # id(edit) -> (edit, candidate)
        session.history.listeners.append(self._on_history)

    @classmethod
    def build(cls, session, threshold: float, retrain_every: int = 20, path=None):
        """Derive the queue of a session's state and restore saved statuses (slow: off the GUI).

        Parameters
        ----------
        session : ProofreadingSession
            The open session.
        threshold : float
            Threshold of the segmentation (candidate derivation).
        retrain_every : int, optional
            Answers between automatic retrains (0: only on demand).
        path : path-like, optional
            The statuses file (see :func:`review_path`).

        Returns
        -------
        ReviewSession
            Attached to the session's history.

        Raises
        ------
        ValueError
            When the state has no region graph, or the statuses file is damaged.
        """
        from ..core.review_candidates import CandidateConfig
        from ..core.review_queue import ReviewQueue

        state = session.state
        graph = getattr(state, "graph", None)
        if graph is None or len(getattr(graph, "edges", ())) == 0:
            raise ValueError(f"{session.store} cannot be reviewed: {_NO_GRAPH}")
        config = CandidateConfig(threshold=float(threshold))
        queue = ReviewQueue(state, config=config, retrain_every=int(retrain_every))
        review = cls(session, queue, path)
        try:
            review.load()
        except BaseException:
            review.close()
            raise
        return review

    def close(self) -> None:
        """Stop listening to the session's history."""
        listeners = self.session.history.listeners
        if self._on_history in listeners:
            listeners.remove(self._on_history)

    # ------------------------------------------------------------ serving items
    def next(self) -> Candidate | None:
        """Make the best pending candidate (of the kind filter) the current item and return it."""
        self.current = self.queue.next(self.kind)
        return self.current

    def select(self, cid: str) -> Candidate:
        """Make a candidate the current item (a table row click); KeyError when it is gone."""
        c = self.queue.candidates.get(cid)
        if c is None:
            raise KeyError(f"candidate {cid} was answered or superseded by an edit")
        self.current = c
        return c

    def describe(self, c: Candidate | None = None) -> str:
        """Return one line about an item: kind, segments, score and probability."""
        c = self.current if c is None else c
        if c is None:
            return "no item"
        segs = " + ".join(map(str, c.segments))
        fix = f"merge {segs}" if c.kind == "merge" else f"split {segs} in two"
        score = self.queue.scores.get(c.id, c.static_score)
        return f"{KIND_NAMES[c.kind]}: {fix} (score {score:,.0f}, P(wrong) {c.prior:.2f})"

    # ------------------------------------------------------------ answers
    def _need_current(self) -> Candidate:
        c = self.current
        if c is None:
            raise ValueError("no item on screen: press N (Next) first")
        live = self.queue.status.get(c.id) in ("pending", "skipped")
        if self.queue.candidates.get(c.id) is not c or not live:
            self.current = None
            raise ValueError("the item on screen was answered or changed by an edit: press N")
        return c

    def accept(self) -> Outcome:
        """Apply the current item's suggested fix through the session's history (journaled).

        Returns
        -------
        Outcome
            The message and the box whose labels changed.
        """
        try:
            c = self._need_current()
            score = self.queue.scores.get(c.id, 0.0)
            self._applying = True
            try:
                self.queue.accept(c.id, history=self.session.history)
            finally:
                self._applying = False
        except (ValueError, KeyError, LockedSegmentError) as error:
            return Outcome(f"Error: {str(error).strip(chr(39))}", None, True)
        entry = self.session.history.entries[-1]
        self._fixes[id(entry.edit)] = (entry.edit, c)
        self._record(c, "accepted", score)
        self.current = None
        return Outcome(f"accepted: {entry.description} (Ctrl+Z undoes it)", entry.bbox)

    def reject(self) -> Outcome:
        """Mark the current item correct (its fix is not applied)."""
        try:
            c = self._need_current()
        except ValueError as error:
            return Outcome(f"Error: {error}", None, True)
        score = self.queue.scores.get(c.id, 0.0)
        self.queue.reject(c.id)
        self._record(c, "rejected", score)
        self.current = None
        return Outcome(f"rejected: {' + '.join(map(str, c.segments))} marked correct")

    def skip(self) -> Outcome:
        """Put the current item aside (not an answer)."""
        try:
            c = self._need_current()
        except ValueError as error:
            return Outcome(f"Error: {error}", None, True)
        self.queue.skip(c.id)
        self.current = None
        self.save()
        return Outcome(f"skipped {' + '.join(map(str, c.segments))}")

    def retrain(self) -> Outcome:
        """Refit the scorer from every answer and re-rank the queue."""
        self.queue.retrain()
        self.version += 1
        kinds = ", ".join(self.queue.scorer.fitted_kinds) or "none yet (too few answers)"
        return Outcome(f"retrained on {len(self.queue.answers)} answers; fitted: {kinds}")

    def _record(self, c: Candidate, status: str, score: float) -> None:
        self.log.append(_log_entry(c, status, score))
        self.save()

    # ------------------------------------------------------------ edits elsewhere
    def _on_history(self, action: str, entry) -> None:
        """History listener: keep the queue consistent after undo, redo and hand edits.

        Never raises (a listener error would roll the edit back): errors go to
        :attr:`error`.
        """
        if self._applying:
            return
        try:
            self._follow(action, entry.edit)
        except Exception as error:  # noqa: BLE001 - must not undo the user's edit
            self.error = f"the review queue could not follow {entry.description}: {error}"

    def _follow(self, action: str, edit) -> None:
        change = _change_of(edit)
        if change is None:
            return
        queue = self.queue
        fix = self._fixes.get(id(edit))
        if fix is not None and fix[0] is edit and action in ("undo", "redo"):
            c = fix[1]
            if action == "undo":  # the answer goes: the item is pending again
                self._drop_log(c.id)
                queue.unanswer(c.id, _touched(change) | {int(s) for s in c.segments})
            else:
                queue.refresh(_touched(change) | {int(s) for s in c.segments})
                queue.status[c.id] = "accepted"
                queue.answers.append((c, True))
                self.log.append(_log_entry(c, "accepted"))
        else:
            before = len(queue.answers)
            kind = getattr(edit, "kind", None) if action in ("do", "redo") else None
            segments = getattr(edit, "segments", None) or [getattr(edit, "segment", 0)]
            queue.observe_edit(change, kind=kind, segments=segments)
            for c, wrong in queue.answers[before:]:  # a hand merge answered a candidate
                self.log.append(_log_entry(c, "accepted" if wrong else "rejected"))
        self.save()
        for callback in self.on_change:
            callback()

    def _drop_log(self, cid: str) -> None:
        for i in range(len(self.log) - 1, -1, -1):
            if self.log[i]["id"] == cid:
                del self.log[i]
                return

    # ------------------------------------------------------------ progress
    def progress(self) -> dict:
        """Return the counts of :attr:`ReviewQueue.progress`, ``reviewed`` counted from the log.

        Keys: ``reviewed``, ``total``, ``pending``, ``accepted``, ``rejected``,
        ``skipped`` and ``estimated_errors_left`` (the sum of the pending
        candidates' probabilities of being wrong).  Cached until the queue changes.
        """
        if self._progress[0] == self.version:
            return dict(self._progress[1])
        queue = self.queue
        counts = {"pending": 0, "accepted": 0, "rejected": 0, "skipped": 0}
        pending = []
        for cid, st in queue.status.items():
            counts[st] = counts.get(st, 0) + 1
            if st == "pending" and cid in queue.candidates:
                pending.append(queue.candidates[cid])
        left = float(queue.scorer.predict(pending).sum()) if pending else 0.0
        answered = {e["id"] for e in self.log}
        p = {
            **counts,
            "reviewed": len(answered),
            "total": len(answered) + counts["pending"] + counts["skipped"],
            "estimated_errors_left": left,
        }
        self._progress = (self.version, p)
        return dict(p)

    def acceptance_rate(self, last: int | None = 20) -> float:
        """Return the share of accepted fixes in the last ``last`` answers (None: all), or nan."""
        recent = self.log if last is None else self.log[-last:]
        if not recent:
            return float("nan")
        return sum(e["status"] == "accepted" for e in recent) / len(recent)

    def progress_text(self) -> str:
        """Return the progress lines the dock shows."""
        p = self.progress()
        lines = [
            f"reviewed {p['reviewed']:,} of {p['total']:,} ({p['pending']:,} pending, "
            f"{p['skipped']:,} skipped); estimated errors left: {p['estimated_errors_left']:.1f}"
        ]
        last, first = self.acceptance_rate(20), _first_rate(self.log, 20)
        if not math.isnan(last):
            n = min(20, len(self.log))
            then = f"the first 20: {first:.0%}; " if len(self.log) > 20 else ""
            lines.append(
                f"accepted {last:.0%} of the last {n} reviews ({then}"
                f"{len(self.queue.answers)} answers to learn from)"
            )
        return "\n".join(lines)

    def row_ids(self, kind: str | None = None) -> list[str]:
        """Return the ids of the table rows in queue order (see :meth:`row`).

        Pending candidates come first (best first), then skipped ones, then the
        answers (latest first).

        Parameters
        ----------
        kind : {"merge", "split"}, optional
            Only candidates of this kind.
        """
        queue = self.queue
        cands, scores = queue.candidates, queue.scores
        live = {"pending": [], "skipped": []}
        for cid, st in queue.status.items():
            if st in live and cid in cands and (kind is None or cands[cid].kind == kind):
                live[st].append(cid)
        for ids in live.values():
            ids.sort(key=scores.__getitem__, reverse=True)
        seen = set()
        answered = []
        for e in reversed(self.log):
            if (kind is None or e["kind"] == kind) and e["id"] not in seen:
                seen.add(e["id"])
                answered.append(e["id"])
        return live["pending"] + live["skipped"] + answered

    def row(self, cid: str) -> tuple:
        """Return one table row: ``(id, kind, segments, score, prior, status)``."""
        queue = self.queue
        st = queue.status.get(cid)
        c = queue.candidates.get(cid)
        if c is not None and st in ("pending", "skipped"):
            return (cid, c.kind, tuple(c.segments), queue.scores.get(cid, 0.0), c.prior, st)
        e = self._logged().get(cid)
        if e is None:
            return (cid, "?", (), 0.0, 0.0, st or "gone")
        segs = tuple(e.get("segments", ()))
        return (cid, e["kind"], segs, e.get("score", 0.0), e["prior"], e["status"])

    def rows(self, kind: str | None = None) -> list[tuple]:
        """Return all table rows (:meth:`row` of each of :meth:`row_ids`)."""
        return [self.row(cid) for cid in self.row_ids(kind)]

    def _logged(self) -> dict:
        if self._log_index[0] != len(self.log) or self._log_index[1] != self.version:
            self._log_index = (len(self.log), self.version, {e["id"]: e for e in self.log})
        return self._log_index[2]

    # ------------------------------------------------------------ persistence
    def save(self) -> None:
        """Write the statuses and answers to :attr:`path` (write, then rename)."""
        from ..io._atomic import move_into_place, temporary_sibling

        self.version += 1
        data = {
            "format": REVIEW_FORMAT,
            "version": REVIEW_VERSION,
            "journal_seq": int(getattr(self.session.journal, "next_seq", 0)),
            "retrain_every": int(self.queue.retrain_every),
            "statuses": self.queue.statuses(),
            "answers": self.log,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_sibling(self.path)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        move_into_place(tmp, self.path, overwrite=True)

    def load(self) -> None:
        """Restore statuses and answers from :attr:`path` (nothing when it does not exist).

        Raises
        ------
        ValueError
            When the file is not a statuses file of this format.
        """
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("format") != REVIEW_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}")
            statuses, log = dict(data["statuses"]), list(data.get("answers", []))
            for e in log:
                if not {"id", "status", "kind", "prior"} <= set(e):
                    raise ValueError(f"an answer lacks fields: {sorted(e)}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{self.path} is not a readable review statuses file ({error}); move it aside "
                "to start the review afresh"
            ) from error
        queue = self.queue
        answered = {e["id"] for e in log}
        order = [e["id"] for e in log if e["id"] in statuses]
        ordered = {cid: statuses[cid] for cid in order}
        ordered.update({k: v for k, v in statuses.items() if k not in ordered})
        queue.load_statuses(ordered)
        gone = [e for e in log if e.get("features") is not None]  # answers still teach
        queue.load_examples(
            [_candidate_of(e) for e in gone], [e["status"] == "accepted" for e in gone]
        )
        self.log = [e for e in log if e["id"] in answered]
        if "retrain_every" in data:
            queue.retrain_every = int(data["retrain_every"])
        if queue.answers:
            queue.retrain()


def _log_entry(c: Candidate, status: str, score: float = 0.0) -> dict:
    return {
        "id": c.id,
        "status": status,
        "score": float(score),
        "kind": c.kind,
        "segments": [int(s) for s in c.segments],
        "prior": float(c.prior),
        "importance": float(c.importance),
        "features": [float(v) for v in np.asarray(c.features, dtype=np.float64)],
    }


def _candidate_of(entry: dict) -> Candidate:
    """Rebuild an answered candidate from the log (enough to learn from: kind and features)."""
    return Candidate(
        id=entry["id"],
        kind=entry["kind"],
        segments=tuple(entry.get("segments", ())),
        location=(),
        bbox=(),
        parts=(),
        features=np.asarray(entry["features"], dtype=np.float64),
        prior=float(entry["prior"]),
        importance=float(entry.get("importance", 0.0)),
    )


def _first_rate(log: list, n: int) -> float:
    first = log[:n]
    return sum(e["status"] == "accepted" for e in first) / len(first) if first else float("nan")
