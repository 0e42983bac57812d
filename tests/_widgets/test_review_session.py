import json
from types import SimpleNamespace

import numpy as np
import pytest

from napari_connectome._widgets._proofread_store import write_session_store
from napari_connectome._widgets._review_session import ReviewSession, review_path, view_box
from napari_connectome.io.journal import open_proofreading

DISPLAY = {"name": "EM", "scale": [40.0, 4.0, 4.0], "translate": [0.0, 0.0, 0.0]}


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 96, 96), seed=1)


@pytest.fixture
def store(tmp_path, result):
    return write_session_store(result, tmp_path / "em.zarr", 0.5, DISPLAY)


def test_view_box_is_cut_to_the_extent_around_the_location():
    c = SimpleNamespace(bbox=(slice(0, 50), slice(10, 900), slice(0, 30)), location=(45, 800, 5))
    box = view_box(c, (60, 1000, 1000), extent=(16, 100, 100))
    assert box == (slice(34, 50), slice(750, 850), slice(0, 30))
    for s, loc in zip(box, c.location, strict=True):
        assert s.start <= loc < s.stop
    small = SimpleNamespace(bbox=(slice(2, 4), slice(5, 9)), location=(3, 6))
    assert view_box(small, (10, 10)) == (slice(2, 4), slice(5, 9))  # 2D, smaller than extent


def test_answers_persist_and_teach_after_reopening(store):
    session = open_proofreading(store)
    review = ReviewSession.build(session, 0.5)
    accepted = review.next()
    assert not review.accept().error
    rejected = review.next()
    assert not review.reject().error
    skipped = review.next()
    assert not review.skip().error
    assert review.next().id not in (accepted.id, rejected.id, skipped.id)
    data = json.loads(review_path(store).read_text())
    assert data["format"] == "napari-connectome-review"
    assert [e["id"] for e in data["answers"]] == [accepted.id, rejected.id]
    assert data["statuses"][rejected.id] == "rejected"
    assert review.acceptance_rate() == 0.5
    table = session.state.table.copy()
    review.close()
    session.close()

    session = open_proofreading(store)  # the journal replays the accepted fix
    np.testing.assert_array_equal(session.state.table, table)
    again = ReviewSession.build(session, 0.5)
    assert again.queue.status[rejected.id] == "rejected"
    assert again.queue.status.get(skipped.id) == "skipped"
    assert [e["id"] for e in again.log] == [accepted.id, rejected.id]
    # the accepted candidate is gone (its segments merged) but still teaches the scorer
    labels = {c.id: wrong for c, wrong in again.queue.answers}
    assert labels == {accepted.id: True, rejected.id: False}
    assert again.progress()["reviewed"] == 2 and again.acceptance_rate() == 0.5
    again.close()
    session.close()


def test_undo_and_redo_of_an_accepted_fix_follow_the_history(store):
    session = open_proofreading(store)
    review = ReviewSession.build(session, 0.5)
    c = review.next()
    outcome = review.accept()
    assert outcome.box is not None and "Ctrl+Z" in outcome.message
    assert review.queue.status[c.id] == "accepted"
    session.history.undo()
    assert review.queue.status[c.id] == "pending" and review.log == []
    assert c.id not in json.loads(review_path(store).read_text())["statuses"]
    session.history.redo()
    assert review.queue.status[c.id] == "accepted"
    assert [e["id"] for e in review.log] == [c.id]
    assert not review.error
    review.close()
    session.close()


def test_review_session_follows_hand_edits_and_refuses_damaged_statuses(store):
    session = open_proofreading(store)
    review = ReviewSession.build(session, 0.5)
    merge = review.queue.pending("merge")[0]
    session.history.merge(*merge.segments)  # the user merges by hand: the item is answered
    assert review.queue.status[merge.id] == "accepted"
    assert [e["id"] for e in review.log] == [merge.id]
    assert all(session.state.has_segment(s) for c in review.queue.pending() for s in c.segments)
    assert review.accept().error  # nothing on screen yet
    review.close()
    assert review._on_history not in session.history.listeners
    session.close()
    review_path(store).write_text("{not json")
    session = open_proofreading(store)
    with pytest.raises(ValueError, match="move it aside"):
        ReviewSession.build(session, 0.5)
    assert not session.history.listeners[1:]  # the failed build left no listener
    session.close()
