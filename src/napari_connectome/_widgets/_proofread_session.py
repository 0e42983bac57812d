"""What the Proofread dock does with clicks and keys, without Qt or napari.

:class:`ProofreadController` turns clicks (voxel positions of the state),
mode changes and button presses into edits of a journaled
:class:`~napari_connectome.io.journal.ProofreadingSession`, and says what
changed in an :class:`Outcome`: a message for the status line and the box
whose labels must be refreshed.  The dock only reads mouse and keys and puts
the outcome on layers.  Also here: the first labelled voxel along a view ray
(3D clicks).  Session stores and layer placement: :mod:`._proofread_store`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass

import numpy as np

from ..core.edits import LockedSegmentError

PICK, MERGE, SPLIT, LOCK = "pick", "merge", "split", "lock"
MODES = (PICK, MERGE, SPLIT, LOCK)

#: Keys bound on the proofread layer, as shown in the dock.
SHORTCUTS = (
    ("Ctrl+Z", "undo"),
    ("Ctrl+Shift+Z", "redo"),
    ("P / M / S / L", "pick / merge / split / lock mode"),
    ("Enter", "merge the selection / commit the split"),
    ("Escape", "clear the selection and seeds"),
    ("1-9", "split: seeds go to part 1-9"),
    ("Shift+click", "merge: add to the selection; split: seed a new part"),
)

#: What the dock says about napari's own label tools.
NOTE = (
    "Note: napari's own paint, fill and erase tools change only this layer: they are "
    "not journaled, not undone by Ctrl+Z here, and the next edit nearby overwrites them."
)


@dataclass
class Outcome:
    """What one action did.

    Attributes
    ----------
    message : str
        For the status line.
    box : tuple of slice or None
        Region (state coordinates) whose labels changed; None when none did.
    error : bool
        Whether the action was refused (nothing changed).
    """

    message: str
    box: tuple | None = None
    error: bool = False


def _refused(message: str) -> Outcome:
    return Outcome(f"Error: {message}", None, True)


def is_empty(box) -> bool:
    """Return whether a box is None or has no voxels."""
    return box is None or any(s.stop <= s.start for s in box)


def union_boxes(a, b):
    """Return the smallest box holding two boxes (either may be None or empty)."""
    if is_empty(a):
        return None if is_empty(b) else b
    if is_empty(b):
        return a
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


def first_labelled_voxel(labels, start, end):
    """Return the first voxel with a label along a ray (a 3D click), or None.

    Parameters
    ----------
    labels : numpy.ndarray
        Label volume.
    start, end : array-like or None
        Ray end points in data coordinates (as ``Layer.get_ray_intersections``
        gives them), near end first.

    Returns
    -------
    tuple of int or None
        The voxel, or None when the ray meets no label.
    """
    if start is None or end is None:
        return None
    start, end = np.asarray(start, dtype=float), np.asarray(end, dtype=float)
    count = max(2, int(2 * np.linalg.norm(end - start)) + 1)
    points = np.rint(np.linspace(start, end, count)).astype(np.int64)
    points = np.clip(points, 0, np.asarray(labels.shape) - 1)
    values = np.asarray(labels[tuple(points.T)])
    hits = np.flatnonzero(values)
    return None if not len(hits) else tuple(int(c) for c in points[hits[0]])


class ProofreadController:
    """Modes, selection, split seeds and history of one proofreading session.

    Parameters
    ----------
    session : ProofreadingSession
        An open session (:func:`~napari_connectome.io.journal.open_proofreading`):
        every edit goes through its history, so it is journaled before the
        method returns.

    Attributes
    ----------
    mode : str
        One of :data:`MODES`.
    selection : list of int
        Segments picked for a merge.
    seeds : list of list of tuple
        Split seeds, one list per part.
    part : int
        Index of the part the next seed goes to.
    split_segment : int or None
        The segment the seeds are in.
    preview : SplitPreview or None
        The last split preview (dropped by any change).
    edits : int
        Edits done through this controller (not counting undo and redo).
    """

    def __init__(self, session):
        self.session = session
        self.mode = PICK
        self.edits = 0
        self.selection: list[int] = []
        self.clear()

    @property
    def state(self):
        """ProofreadingState: The edited state."""
        return self.session.state

    @property
    def history(self):
        """History: Undo and redo (journaled)."""
        return self.session.history

    # ----------------------------------------------------------------- helpers
    def _segment(self, position) -> int:
        """Return the segment at a voxel; ValueError for the background or outside."""
        try:
            segment = self.state.segment_at(position)
        except IndexError as error:
            raise ValueError(str(error)) from None
        if segment == 0:
            raise ValueError("there is no segment there (background)")
        return segment

    def _edit(self, action, description: str) -> Outcome:
        try:
            box = action()
        except (ValueError, LockedSegmentError) as error:
            return _refused(str(error))
        self.preview = None
        return Outcome(description, box)

    def set_mode(self, mode: str) -> Outcome:
        """Switch mode; the merge selection and split seeds are kept."""
        if mode not in MODES:
            return _refused(f"unknown mode {mode!r}; pick one of {', '.join(MODES)}")
        self.mode = mode
        return Outcome(f"{mode} mode")

    def clear(self) -> Outcome:
        """Drop the merge selection, the split seeds and the preview."""
        self.selection = []
        self.seeds: list[list[tuple]] = [[]]
        self.part = 0
        self.split_segment: int | None = None
        self.preview = None
        return Outcome("cleared the selection and seeds")

    # ------------------------------------------------------------------ clicks
    def click(self, position, shift: bool = False) -> Outcome:
        """Handle a click at a voxel of the state in the current mode.

        Parameters
        ----------
        position : sequence of int
            Voxel ``(z, y, x)`` or ``(y, x)`` of the state.
        shift : bool, optional
            Shift held: in merge mode add to the selection without merging, in
            split mode start a new part.

        Returns
        -------
        Outcome
            What happened.
        """
        try:
            segment = self._segment(position)
        except ValueError as error:
            return _refused(str(error))
        if self.mode == MERGE:
            return self._select(segment, shift)
        if self.mode == SPLIT:
            return self.add_seed(position, new_part=shift)
        if self.mode == LOCK:
            return self.toggle_lock(segment)
        return self.describe(segment)

    def describe(self, segment: int) -> Outcome:
        """Say what a segment is (pick mode)."""
        state = self.state
        frags = len(state.segment_fragments(segment))
        lock = ", locked" if state.is_locked(segment) else ""
        return Outcome(
            f"segment {segment}: {state.segment_size(segment):,} voxels, {frags} fragments{lock}"
        )

    def _select(self, segment: int, shift: bool) -> Outcome:
        if segment in self.selection:
            self.selection.remove(segment)
            return Outcome(f"unselected {segment}; selected: {self._selected()}")
        self.selection.append(segment)
        if not shift and len(self.selection) >= 2:
            return self.merge()
        return Outcome(f"selected: {self._selected()}")

    def _selected(self) -> str:
        return ", ".join(str(s) for s in self.selection) or "none"

    def merge(self) -> Outcome:
        """Merge the selected segments (one journaled edit)."""
        if len(self.selection) < 2:
            return _refused(f"select two or more segments to merge (selected: {self._selected()})")
        segments = list(self.selection)
        outcome = self._edit(lambda: self.history.merge(*segments), "")
        if outcome.error:
            self.selection = []
            return outcome
        self.edits += 1
        self.selection = []
        kept = self.history.entries[-1].edit.result.get("segment")
        outcome.message = f"merged {' + '.join(map(str, segments))} into {kept}"
        return outcome

    def add_seed(self, position, part: int | None = None, new_part: bool = False) -> Outcome:
        """Add a split seed at a voxel.

        Parameters
        ----------
        position : sequence of int
            Voxel of the state, in the segment being split (the first seed picks it).
        part : int, optional
            Part (0-based) the seed goes to; the current one by default.
        new_part : bool, optional
            Start a new part with this seed (unless the current part has no seed).

        Returns
        -------
        Outcome
            What happened.
        """
        try:
            segment = self._segment(position)
        except ValueError as error:
            return _refused(str(error))
        if self.split_segment is not None and segment != self.split_segment:
            return _refused(
                f"the seed is in segment {segment}, not in segment {self.split_segment} being "
                "split (Escape starts over)"
            )
        if self.state.is_locked(segment):
            return _refused(f"segment {segment} is locked; unlock it before splitting")
        if part is not None:
            chosen = self.select_part(part)
            if chosen.error:
                return chosen
        elif new_part and self.seeds[self.part]:
            self.select_part(len(self.seeds))
        self.split_segment = segment
        self.seeds[self.part].append(tuple(int(round(c)) for c in position))
        self.preview = None
        return Outcome(
            f"seed {len(self.seeds[self.part])} of part {self.part + 1} in segment {segment}"
        )

    def select_part(self, part: int) -> Outcome:
        """Make later seeds go to a part (0-based; at most one past the last)."""
        part = int(part)
        if not 0 <= part <= len(self.seeds):
            return _refused(f"part {part + 1} does not follow the parts so far")
        if part == len(self.seeds):
            self.seeds.append([])
        self.part = part
        return Outcome(f"seeds go to part {part + 1}")

    def next_part(self) -> Outcome:
        """Start the next part (the current one must have a seed)."""
        if not self.seeds[self.part]:
            return _refused(f"part {self.part + 1} has no seed yet")
        return self.select_part(len(self.seeds))

    def _seed_groups(self):
        groups = [g for g in self.seeds if g]
        if self.split_segment is None or len(groups) < 2:
            raise ValueError("place seeds in two or more parts (Shift-click or 'next part')")
        return groups

    def preview_split(self) -> Outcome:
        """Plan the split of the seeded segment without changing anything."""
        try:
            groups = self._seed_groups()
            self.preview = self.state.preview_split(self.split_segment, groups)
        except (ValueError, LockedSegmentError) as error:
            return _refused(str(error))
        p = self.preview
        parts = ", ".join(
            f"{p.segment_ids[g]} ({p.sizes[g]:,} voxels)" for g in sorted(p.segment_ids)
        )
        return Outcome(f"preview: segment {p.segment} would become {parts}")

    def commit_split(self) -> Outcome:
        """Split the seeded segment (one journaled edit)."""
        try:
            groups = self._seed_groups()
        except ValueError as error:
            return _refused(str(error))
        segment = self.split_segment
        outcome = self._edit(lambda: self.history.split(segment, groups), "")
        if outcome.error:
            return outcome
        self.edits += 1
        ids = self.history.entries[-1].edit.result.get("segments", [])
        self.clear()
        outcome.message = f"split {segment} into {', '.join(map(str, ids))}"
        return outcome

    def commit(self) -> Outcome:
        """Enter: merge the selection (merge mode) or commit the split (split mode)."""
        if self.mode == MERGE:
            return self.merge()
        if self.mode == SPLIT:
            return self.commit_split()
        return _refused(f"nothing to commit in {self.mode} mode")

    def toggle_lock(self, segment: int) -> Outcome:
        """Lock an unlocked segment, unlock a locked one (one journaled edit)."""
        locked = self.state.is_locked(segment)
        verb = "unlocked" if locked else "locked"
        action = self.history.unlock if locked else self.history.lock
        outcome = self._edit(lambda: action(segment), f"{verb} {segment}")
        if not outcome.error:
            self.edits += 1
        return outcome

    # ----------------------------------------------------------------- history
    def undo(self) -> Outcome:
        """Undo the last edit."""
        if not self.history.can_undo:
            return _refused("nothing to undo")
        what = self.history.entries[-1].description
        return self._edit(self.history.undo, f"undid {what}")

    def redo(self) -> Outcome:
        """Redo the last undone edit."""
        if not self.history.can_redo:
            return _refused("nothing to redo")
        what = self.history.redo_entries[-1].description
        return self._edit(self.history.redo, f"redid {what}")

    def go_to(self, done: int) -> Outcome:
        """Undo or redo until ``done`` edits are done (a click on a history row).

        Parameters
        ----------
        done : int
            Number of edits to keep done, ``0 <= done <= len(rows) - 1``.

        Returns
        -------
        Outcome
            The union of the changed boxes.
        """
        history = self.history
        now, total = len(history), len(history) + len(history.redo_entries)
        if not 0 <= done <= total:
            return _refused(f"there is no history step {done}")
        if done <= now:
            return self._edit(lambda: history.undo_to(done), f"back to step {done}")

        def forward():
            box = None
            while len(history) < done:
                box = union_boxes(box, history.redo())
            return box

        return self._edit(forward, f"forward to step {done}")

    def rows(self) -> list[tuple[str, bool]]:
        """Return the history rows: ``(text, done)``, the session start first."""
        history = self.history
        rows = [("0. session start", True)]
        for i, entry in enumerate(history.entries, start=1):
            rows.append((f"{i}. {entry.description} - {entry.user}, {_clock(entry.time)}", True))
        for i, entry in enumerate(reversed(history.redo_entries), start=len(history) + 1):
            rows.append((f"{i}. {entry.description} (undone)", False))
        return rows

    def selection_text(self) -> str:
        """Return the merge selection, or the split seeds per part in split mode."""
        if self.mode == SPLIT:
            parts = " | ".join(f"part {i + 1}: {len(g)} seeds" for i, g in enumerate(self.seeds))
            return f"split {self.split_segment or '-'}: {parts}"
        return f"selected: {self._selected()}"

    def counts(self) -> str:
        """Return a one-line summary: segments, locks and edits."""
        state = self.state
        locked = ", ".join(map(str, sorted(state.locked))) or "none"
        return (
            f"{len(state.segments):,} segments; {self.edits} edits this session, "
            f"{len(self.history)} in the history\nlocked: {locked}"
        )


def _clock(iso: str) -> str:
    """Return the local ``HH:MM:SS`` of an ISO 8601 time (the string itself when unparsable)."""
    try:
        return _dt.datetime.fromisoformat(iso).astimezone().strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return str(iso)
