"""Undo and redo of proofreading edits, with who did what and when.

:class:`History` keeps done and undone edits (action objects of
:mod:`napari_connectome.core.edits`) with a description, the user and the
time.  Listeners (such as the journal of :mod:`napari_connectome.io.journal`)
hear of every do, undo and redo before the call returns.

Pure Python: no Qt, no napari, no torch.
"""

from __future__ import annotations

import datetime as _dt
import getpass
from collections.abc import Callable
from dataclasses import dataclass, field

from .edits import Edit, LockEdit, MergeEdit, SplitEdit

__all__ = ["History", "HistoryEntry", "default_user"]


def default_user() -> str:
    """Return the login name, or ``"unknown"`` where there is none."""
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _union_boxes(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if all(s.stop <= s.start for s in a):
        return b
    if all(s.stop <= s.start for s in b):
        return a
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


@dataclass
class HistoryEntry:
    """One done (or undone) edit.

    Attributes
    ----------
    edit : Edit
        The edit.
    description : str
        Human description, such as ``"split 7 into 3 parts"``.
    user : str
        Who did it.
    time : str
        When, ISO 8601 in UTC.
    """

    edit: Edit
    description: str
    user: str
    time: str
    bbox: tuple = field(default=(), repr=False)


class History:
    """Undo and redo of proofreading edits on one state.

    Parameters
    ----------
    state : ProofreadingState
        The state the edits change.
    user : str, optional
        Name recorded with each edit; the login name by default.

    Attributes
    ----------
    listeners : list of callable
        ``listener(action, entry)`` with ``action`` in ``{"do", "undo",
        "redo"}``, called after each successful step and before the method
        returns.  When a listener raises (say the journal cannot be written),
        the step is rolled back and the error propagates.
    """

    def __init__(self, state, user: str | None = None):
        self.state = state
        self.user = user or default_user()
        self.listeners: list[Callable[[str, HistoryEntry], object]] = []
        self._done: list[HistoryEntry] = []
        self._undone: list[HistoryEntry] = []

    @property
    def entries(self) -> list[HistoryEntry]:
        """List of HistoryEntry: Done edits, oldest first."""
        return list(self._done)

    @property
    def redo_entries(self) -> list[HistoryEntry]:
        """List of HistoryEntry: Undone edits, the next to redo last."""
        return list(self._undone)

    @property
    def can_undo(self) -> bool:
        """bool: Whether there is an edit to undo."""
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        """bool: Whether there is an edit to redo."""
        return bool(self._undone)

    @property
    def nbytes(self) -> int:
        """int: Bytes of change data held by all entries."""
        return sum(e.edit.nbytes for e in self._done + self._undone)

    def __len__(self) -> int:
        return len(self._done)

    def _notify(self, action: str, entry: HistoryEntry, rollback: Edit) -> None:
        try:
            for listener in self.listeners:
                listener(action, entry)
        except BaseException:
            self.state.apply(rollback)
            raise

    def do(self, edit: Edit) -> tuple[slice, ...]:
        """Apply an edit and record it; clears the redo stack.

        Parameters
        ----------
        edit : Edit
            A new edit.

        Returns
        -------
        tuple of slice
            Bounding box whose labels may have changed.
        """
        box = self.state.apply(edit)
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")
        entry = HistoryEntry(edit, edit.describe(), self.user, now, box)
        self._notify("do", entry, edit.inverse())
        self._done.append(entry)
        self._undone.clear()
        return box

    def undo(self) -> tuple[slice, ...] | None:
        """Undo the last edit; None when there is none.

        Returns
        -------
        tuple of slice or None
            Bounding box whose labels may have changed.
        """
        if not self._done:
            return None
        entry = self._done[-1]
        box = self.state.apply(entry.edit.inverse())
        self._notify("undo", entry, entry.edit)
        self._undone.append(self._done.pop())
        return box

    def redo(self) -> tuple[slice, ...] | None:
        """Redo the last undone edit; None when there is none.

        Returns
        -------
        tuple of slice or None
            Bounding box whose labels may have changed.
        """
        if not self._undone:
            return None
        entry = self._undone[-1]
        box = self.state.apply(entry.edit)
        self._notify("redo", entry, entry.edit.inverse())
        self._done.append(self._undone.pop())
        return box

    def undo_to(self, index: int) -> tuple[slice, ...] | None:
        """Undo edits until ``index`` remain done.

        Parameters
        ----------
        index : int
            Number of edits to keep, ``0 <= index <= len(history)``.

        Returns
        -------
        tuple of slice or None
            Union of the changed bounding boxes; None when nothing was undone.
        """
        if not 0 <= index <= len(self._done):
            raise IndexError(f"index {index} is outside 0..{len(self._done)}")
        box = None
        while len(self._done) > index:
            box = _union_boxes(box, self.undo())
        return box

    def merge(self, *segments) -> tuple[slice, ...]:
        """Merge segments (see :class:`MergeEdit`) as an undoable edit."""
        return self.do(MergeEdit(*segments))

    def split(self, segment: int, seeds) -> tuple[slice, ...]:
        """Split a segment between seed groups (see :class:`SplitEdit`) as an undoable edit."""
        return self.do(SplitEdit(segment, seeds))

    def lock(self, segment: int) -> tuple[slice, ...]:
        """Lock a segment as an undoable edit."""
        return self.do(LockEdit(segment, True))

    def unlock(self, segment: int) -> tuple[slice, ...]:
        """Unlock a segment as an undoable edit."""
        return self.do(LockEdit(segment, False))
