"""Bad input to proofreading edits: a clear error and no change of the state."""

from types import SimpleNamespace

import numpy as np
import pytest

from napari_connectome._widgets._proofread_session import ProofreadController
from napari_connectome.core.proofreading import (
    History,
    LockEdit,
    LockedSegmentError,
    MergeEdit,
    ProofreadingState,
    SplitEdit,
)

VOXEL_SIZE = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 64, 64), seed=0, noise=0.05)


@pytest.fixture
def history(result):
    table = result.table_at(0.5).copy()
    table[1] = 0  # fragment 1 is background (in no segment)
    state = ProofreadingState(
        result.fragments.copy(),
        result.graph,
        table,
        boundaries=result.boundaries,
        voxel_size=result.voxel_size,
    )
    return History(state, user="test")


def voxel_of(state, fragment, k=0):
    """The ``k``-th voxel of a fragment (searched in its box only)."""
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)
    return tuple(int(c) for c in where[k] + [s.start for s in box])


def multi_fragment_segment(state):
    """A segment of two or more fragments, and two voxels of different fragments of it."""
    for s in state.segments.tolist():
        frags = state.segment_fragments(s)
        if len(frags) >= 2:
            return s, voxel_of(state, int(frags[0])), voxel_of(state, int(frags[1]))
    pytest.skip("no segment with two fragments")


def background_voxel(state):
    """A voxel in no segment (of fragment 0, or of a fragment the table maps to 0)."""
    where = np.argwhere(state.table[state.fragments.astype(np.int64)] == 0)
    assert len(where)
    assert state.segment_at(where[0]) == 0
    return tuple(int(c) for c in where[0])


def snapshot(history):
    state = history.state
    return (
        state.table.copy(),
        state.fragments.copy(),
        set(state.locked),
        state.next_segment_id,
        len(history),
        len(history.redo_entries),
    )


def assert_unchanged(history, snap):
    table, fragments, locked, next_id, done, undone = snap
    state = history.state
    assert np.array_equal(state.table, table)
    assert np.array_equal(state.fragments, fragments)
    assert set(state.locked) == locked
    assert state.next_segment_id == next_id
    assert len(history) == done
    assert len(history.redo_entries) == undone


def refused(history, edit, error=ValueError, match=None):
    """Apply an edit through the history; assert it raises and changes nothing."""
    snap = snapshot(history)
    with pytest.raises(error, match=match):
        history.do(edit)
    assert_unchanged(history, snap)


def test_split_seed_outside_the_volume(history):
    s, a, _ = multi_fragment_segment(history.state)
    shape = history.state.fragments.shape
    for outside in [(-1, 0, 0), tuple(shape), (0, shape[1], 0), (0, 0, -5)]:
        refused(history, SplitEdit(s, [[a], [outside]]), match="outside the volume")


def test_split_seed_on_background(history):
    s, a, _ = multi_fragment_segment(history.state)
    refused(
        history,
        SplitEdit(s, [[a], [background_voxel(history.state)]]),
        match="is in segment 0",
    )


def test_split_seed_in_another_segment(history):
    state = history.state
    s, a, _ = multi_fragment_segment(state)
    other = next(t for t in state.segments.tolist() if t != s)
    b = voxel_of(state, int(state.segment_fragments(other)[0]))
    refused(history, SplitEdit(s, [[a], [b]]), match=f"not in segment {s}")


def test_split_all_seeds_in_one_part(history):
    s, a, b = multi_fragment_segment(history.state)
    refused(history, SplitEdit(s, [[a, b]]), match="two or more seed groups")
    refused(history, SplitEdit(s, [[a, b], []]), match="non-empty")


def test_split_same_seed_in_two_parts(history):
    s, a, b = multi_fragment_segment(history.state)
    refused(history, SplitEdit(s, [[a, b], [a]]), match="in two seed groups")


def test_split_seeds_of_the_wrong_dimension(history):
    s, a, _ = multi_fragment_segment(history.state)
    refused(history, SplitEdit(s, [[a], [(1, 2)]]), match="3D positions")


def test_merge_with_itself(history):
    s = int(history.state.segments[0])
    refused(history, MergeEdit(s, s), match="distinct segments")
    refused(history, MergeEdit(s), match="two or more")


def test_merge_background(history):
    s = int(history.state.segments[0])
    refused(history, MergeEdit(s, 0), match="no segment 0")


@pytest.mark.parametrize("bad", [10**6, 2**40, -3])
def test_unknown_segment(history, bad):
    state = history.state
    s, a, b = multi_fragment_segment(state)
    refused(history, MergeEdit(s, bad), match="no segment")
    refused(history, SplitEdit(bad, [[a], [b]]), match="no segment")
    refused(history, LockEdit(bad, True), match="no segment")
    with pytest.raises(ValueError, match="no segment"):
        state.segment_fragments(bad)


def test_locked_segment(history):
    state = history.state
    s, a, b = multi_fragment_segment(state)
    other = next(t for t in state.segments.tolist() if t != s)
    history.lock(s)
    refused(history, MergeEdit(s, other), LockedSegmentError)
    refused(history, MergeEdit(other, s), LockedSegmentError)
    refused(history, SplitEdit(s, [[a], [b]]), LockedSegmentError)
    refused(history, LockEdit(s, True), ValueError, match="already locked")
    refused(history, LockEdit(other, False), ValueError, match="already unlocked")
    # the state still works: unlock, then the same edits go through
    history.unlock(s)
    history.split(s, [[a], [b]])
    assert len(history) == 3


def test_undo_redo_with_empty_history(history):
    snap = snapshot(history)
    assert not history.can_undo and not history.can_redo
    assert history.undo() is None
    assert history.redo() is None
    assert history.undo_to(0) is None
    assert_unchanged(history, snap)
    with pytest.raises(IndexError):
        history.undo_to(1)
    assert_unchanged(history, snap)


def test_redo_after_a_new_edit_is_a_no_op(history):
    state = history.state
    a, b = state.segments[:2].tolist()
    history.merge(a, b)
    history.undo()
    c, d = state.segments[:2].tolist()
    history.merge(c, d)  # clears the redo stack
    snap = snapshot(history)
    assert history.redo() is None
    assert_unchanged(history, snap)


def test_dock_controller_reports_bad_input_on_the_status_line(history):
    """The dock's controller turns the same errors into a status line, no exception."""
    state = history.state
    controller = ProofreadController(SimpleNamespace(state=state, history=history))
    snap = snapshot(history)
    for action in (controller.undo, controller.redo):
        outcome = action()
        assert outcome.message.startswith("Error: nothing to")
        assert outcome.box is None
        assert outcome.error
    for position in [(-1, 0, 0), background_voxel(state)]:
        outcome = controller.click(position)
        assert outcome.error and outcome.message.startswith("Error:")
    _, a, b = multi_fragment_segment(state)
    controller.mode = "split"
    assert not controller.click(a).error
    assert not controller.click(b).error  # same part: all seeds in one part
    outcome = controller.commit_split()
    assert outcome.error and outcome.message.startswith("Error:")
    assert_unchanged(history, snap)
