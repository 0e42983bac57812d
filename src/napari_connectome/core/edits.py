"""Proofreading edits as undoable action objects, and the edit history.

An edit is applied to a
:class:`~napari_connectome.core.proofreading.ProofreadingState` with
``state.apply(edit)`` (or ``edit.apply(state)``), which returns the bounding
box (a tuple of slices) whose displayed labels may have changed, so a view
refreshes only that region.  ``edit.inverse()`` returns the edit that undoes
it.  Edits resolve themselves on their first application into compact change
data (:class:`Change`): the table entries changed as ``(fragment ids, old
segment, new segment)`` arrays and, for a split inside a fragment, the
fragment's bounding box with the indices, old and new fragment ids of the
voxels that changed.  Re-applying an edit (redo) re-applies that data, so ids
are the same every time.

:class:`~napari_connectome.core.history.History` keeps done and undone edits.

Pure numpy: no Qt, no napari, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Change",
    "ChangeEdit",
    "Edit",
    "FragmentPatch",
    "LockEdit",
    "LockedSegmentError",
    "MergeEdit",
    "SplitEdit",
    "TableChange",
    "edit_from_dict",
]


class LockedSegmentError(RuntimeError):
    """An edit would change a locked segment."""


def _ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.uint64).reshape(-1)


def _nbytes(obj) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    return 0


@dataclass(eq=False)
class TableChange:
    """Fragment-to-segment table entries changed by an edit.

    Parameters
    ----------
    fragments : numpy.ndarray
        ``uint64`` fragment ids, sorted and unique.
    old, new : numpy.ndarray
        ``uint64`` segment ids of those fragments before and after (0 for a
        fragment id that does not exist on that side).
    """

    fragments: np.ndarray
    old: np.ndarray
    new: np.ndarray

    def __post_init__(self):
        self.fragments, self.old, self.new = (
            _ids(a) for a in (self.fragments, self.old, self.new)
        )
        if not (len(self.fragments) == len(self.old) == len(self.new)):
            raise ValueError("fragments, old and new must have the same length")
        if len(self.fragments) > 1 and not np.all(self.fragments[1:] > self.fragments[:-1]):
            order = np.argsort(self.fragments, kind="stable")
            self.fragments, self.old, self.new = (
                a[order] for a in (self.fragments, self.old, self.new)
            )
            if np.any(self.fragments[1:] == self.fragments[:-1]):
                raise ValueError("fragment ids of a table change must be unique")

    def inverted(self) -> TableChange:
        """Return the change that undoes this one."""
        return TableChange(self.fragments, self.new, self.old)

    @property
    def nbytes(self) -> int:
        """int: Bytes held by the arrays."""
        return self.fragments.nbytes + self.old.nbytes + self.new.nbytes


@dataclass(eq=False)
class FragmentPatch:
    """Voxel-level change: fragments cut into new fragments inside a box.

    Parameters
    ----------
    start : tuple of int
        Start of the box in the volume.
    shape : tuple of int
        Shape of the box.
    index : numpy.ndarray
        Flat (C-order) indices inside the box of the voxels that change.
    old, new : numpy.ndarray
        ``uint64`` fragment ids of those voxels before and after.
    touched : numpy.ndarray
        ``uint64`` sorted ids of every fragment whose voxels change (the cut
        fragments and the new ones).
    rows_old, rows_new : numpy.ndarray
        ``(len(touched), 2 * ndim + 1)`` ``int64`` bounding box and voxel
        count of each touched fragment before and after (zeros when absent).
    edges_old, edges_new : dict of numpy.ndarray
        Region-graph edges touching a touched fragment before and after, one
        array per :class:`~napari_connectome.core.region_graph.RegionGraph`
        edge field.
    n_old, n_new : int
        Largest fragment id before and after.
    """

    start: tuple
    shape: tuple
    index: np.ndarray
    old: np.ndarray
    new: np.ndarray
    touched: np.ndarray
    rows_old: np.ndarray
    rows_new: np.ndarray
    edges_old: dict
    edges_new: dict
    n_old: int
    n_new: int

    def inverted(self) -> FragmentPatch:
        """Return the patch that undoes this one."""
        return FragmentPatch(
            self.start,
            self.shape,
            self.index,
            self.new,
            self.old,
            self.touched,
            self.rows_new,
            self.rows_old,
            self.edges_new,
            self.edges_old,
            self.n_new,
            self.n_old,
        )

    @property
    def box(self) -> tuple[slice, ...]:
        """Return the patched box as a tuple of slices."""
        return tuple(slice(a, a + n) for a, n in zip(self.start, self.shape, strict=True))

    @property
    def nbytes(self) -> int:
        """int: Bytes held by the arrays."""
        arrays = (self.index, self.old, self.new, self.touched, self.rows_old, self.rows_new)
        return sum(a.nbytes for a in arrays) + _nbytes(self.edges_old) + _nbytes(self.edges_new)


@dataclass(eq=False)
class Change:
    """Everything one edit changes, compact: table entries and an optional voxel patch.

    Parameters
    ----------
    table : TableChange
        Table entries changed.
    patch : FragmentPatch, optional
        Voxels cut into new fragments (applied before the table change).
    next_segment : int
        Segment ids below it are taken once the change is applied (the state's
        next free id never decreases, so ids are never reused).
    """

    table: TableChange
    patch: FragmentPatch | None = None
    next_segment: int = 0

    def inverted(self) -> Change:
        """Return the change that undoes this one."""
        patch = None if self.patch is None else self.patch.inverted()
        return Change(self.table.inverted(), patch, self.next_segment)

    @property
    def nbytes(self) -> int:
        """int: Bytes held by the arrays."""
        return self.table.nbytes + (0 if self.patch is None else self.patch.nbytes)


class Edit:
    """Base class of proofreading edits.

    Subclasses implement :meth:`apply`, :meth:`inverse`, :meth:`describe` and,
    for edits a journal can replay, :meth:`to_dict`.
    """

    kind = "edit"

    def apply(self, state) -> tuple[slice, ...]:
        """Apply the edit to a state.

        Parameters
        ----------
        state : ProofreadingState
            The state to change.

        Returns
        -------
        tuple of slice
            Bounding box whose displayed labels may have changed.
        """
        raise NotImplementedError

    def inverse(self) -> Edit:
        """Return the edit that undoes this one (after it was applied)."""
        raise NotImplementedError

    def describe(self) -> str:
        """Return a short human description, such as ``"merge 12 + 40"``."""
        return self.kind

    def to_dict(self) -> dict:
        """Return the parameters that replay the edit (``kind`` included)."""
        raise TypeError(f"a {type(self).__name__} cannot be journaled; journal its origin")

    @property
    def result(self) -> dict:
        """dict: Ids the edit produced (empty before it is applied)."""
        return {}

    @property
    def nbytes(self) -> int:
        """int: Bytes of change data held for undo and redo."""
        return 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"


class ChangeEdit(Edit):
    """An edit given by its change data, typically the inverse of another edit.

    Parameters
    ----------
    change : Change
        What to change.
    description : str
        Human description.
    """

    kind = "change"

    def __init__(self, change: Change, description: str = "change"):
        self.change = change
        self.description = description

    def apply(self, state) -> tuple[slice, ...]:  # noqa: D102
        return state.apply_change(self.change)

    def inverse(self) -> Edit:  # noqa: D102
        return ChangeEdit(self.change.inverted(), f"undo {self.description}")

    def describe(self) -> str:  # noqa: D102
        return self.description

    @property
    def nbytes(self) -> int:  # noqa: D102
        return self.change.nbytes


class _ResolvedEdit(Edit):
    """An edit that computes its change on first application and keeps it."""

    def __init__(self):
        self._change: Change | None = None
        self._result: dict = {}

    def _resolve(self, state) -> tuple[Change, dict]:
        raise NotImplementedError

    def apply(self, state) -> tuple[slice, ...]:  # noqa: D102
        if self._change is None:
            change, result = self._resolve(state)
            box = state.apply_change(change)
            self._change, self._result = change, result
            return box
        return state.apply_change(self._change)

    def inverse(self) -> Edit:  # noqa: D102
        if self._change is None:
            raise RuntimeError(f"apply {self.describe()!r} before asking for its inverse")
        return ChangeEdit(self._change.inverted(), f"undo {self.describe()}")

    @property
    def result(self) -> dict:  # noqa: D102
        return dict(self._result)

    @property
    def nbytes(self) -> int:  # noqa: D102
        return 0 if self._change is None else self._change.nbytes


class MergeEdit(_ResolvedEdit):
    """Merge two or more segments: a union in the table, no voxel is touched.

    The merged segment keeps the id of the largest segment (most voxels; the
    smallest id on a tie), so only the fragments of the smaller segments change
    in the table and the changed bounding box is theirs.

    Parameters
    ----------
    *segments : int
        Two or more distinct segment ids.
    """

    kind = "merge"

    def __init__(self, *segments):
        super().__init__()
        if len(segments) == 1 and isinstance(segments[0], Sequence | np.ndarray):
            segments = tuple(segments[0])
        self.segments = tuple(int(s) for s in segments)

    def _resolve(self, state):
        change = state.resolve_merge(self.segments)
        keep = int(change.table.new[0]) if len(change.table.new) else self.segments[0]
        return change, {"segment": keep}

    def describe(self) -> str:  # noqa: D102
        return "merge " + " + ".join(str(s) for s in self.segments)

    def to_dict(self) -> dict:  # noqa: D102
        return {"kind": self.kind, "segments": list(self.segments)}


class SplitEdit(_ResolvedEdit):
    """Split a segment into parts, one per group of seed voxels.

    See :meth:`~napari_connectome.core.proofreading.ProofreadingState.plan_split`
    for how the fragment graph is cut (and fragments shared by two seed groups
    are cut by voxels).  The largest part keeps the segment id; the others get
    new ids.

    Parameters
    ----------
    segment : int
        The segment to split.
    seeds : sequence of sequence of position
        Two or more groups of voxel positions (``(z, y, x)`` or ``(y, x)``).
    """

    kind = "split"

    def __init__(self, segment: int, seeds):
        super().__init__()
        self.segment = int(segment)
        self.seeds = [[tuple(int(c) for c in p) for p in group] for group in seeds]

    def _resolve(self, state):
        plan = state.plan_split(self.segment, self.seeds)
        ids = [int(plan.segment_ids[g]) for g in range(len(self.seeds))]
        return plan.change, {"segments": ids}

    def describe(self) -> str:  # noqa: D102
        return f"split {self.segment} into {len(self.seeds)} parts"

    def to_dict(self) -> dict:  # noqa: D102
        seeds = [[list(p) for p in group] for group in self.seeds]
        return {"kind": self.kind, "segment": self.segment, "seeds": seeds}


class LockEdit(Edit):
    """Lock (or unlock) a segment; edits that would change a locked segment are refused.

    Parameters
    ----------
    segment : int
        The segment.
    locked : bool, optional
        True to lock, False to unlock.
    """

    def __init__(self, segment: int, locked: bool = True):
        self.segment = int(segment)
        self.locked = bool(locked)

    @property
    def kind(self) -> str:  # noqa: D102
        return "lock" if self.locked else "unlock"

    def apply(self, state) -> tuple[slice, ...]:  # noqa: D102
        return state.set_locked(self.segment, self.locked)

    def inverse(self) -> Edit:  # noqa: D102
        return LockEdit(self.segment, not self.locked)

    def describe(self) -> str:  # noqa: D102
        return f"{self.kind} {self.segment}"

    def to_dict(self) -> dict:  # noqa: D102
        return {"kind": self.kind, "segment": self.segment}


def edit_from_dict(data: dict) -> Edit:
    """Rebuild an edit from :meth:`Edit.to_dict` output.

    Parameters
    ----------
    data : dict
        ``{"kind": "merge", "segments": [...]}``, ``{"kind": "split",
        "segment": s, "seeds": [...]}``, ``{"kind": "lock", "segment": s}`` or
        ``{"kind": "unlock", "segment": s}``.

    Returns
    -------
    Edit
        The edit, not yet applied.

    Raises
    ------
    ValueError
        For an unknown kind or missing parameters.
    """
    kind = data.get("kind")
    try:
        if kind == "merge":
            return MergeEdit(*data["segments"])
        if kind == "split":
            return SplitEdit(data["segment"], data["seeds"])
        if kind in ("lock", "unlock"):
            return LockEdit(data["segment"], kind == "lock")
    except (KeyError, TypeError) as exc:
        raise ValueError(f"bad {kind} edit {data!r}: {exc}") from exc
    raise ValueError(f"unknown edit kind {kind!r}")
