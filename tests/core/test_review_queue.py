import numpy as np
import pytest

from napari_connectome.core.history import History
from napari_connectome.core.proofreading import ProofreadingState
from napari_connectome.core.review_queue import ReviewQueue


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 128, 128), seed=1, noise=0.3)


def fresh_state(result):
    state = ProofreadingState.from_result(result)
    state.fragments = state.fragments.copy()
    return state


def test_next_serves_the_best_pending_candidate_and_answers_change_status(result):
    queue = ReviewQueue(fresh_state(result), ranking="static")
    first = queue.next()
    assert first is not None and queue.status[first.id] == "pending"
    assert queue.scores[first.id] == max(queue.scores[c.id] for c in queue.pending())
    assert queue.pending()[0] is first
    queue.reject(first.id)
    assert queue.status[first.id] == "rejected"
    second = queue.next()
    assert second is not first
    queue.skip(second.id)
    assert queue.status[second.id] == "skipped"
    assert queue.next() not in (first, second)
    progress = queue.progress
    assert progress["rejected"] == 1 and progress["skipped"] == 1 and progress["reviewed"] == 1
    assert progress["pending"] == len(queue.pending())
    assert 0 < progress["estimated_errors_left"] < progress["pending"]
    with pytest.raises(KeyError, match="no current candidate"):
        queue.reject("merge:0+0:nothing")


def test_accept_applies_the_fix_undoably_and_rederives_changed_segments(result):
    state = fresh_state(result)
    table_before = state.table.copy()
    history = History(state)
    queue = ReviewQueue(state, ranking="static")
    merge = queue.pending("merge")[0]
    a, b = merge.segments
    change = queue.accept(merge.id, history=history)
    assert queue.status[merge.id] == "accepted"
    kept = int(change.table.new[0])
    assert not (state.has_segment(a) and state.has_segment(b))
    assert np.all(state.table[merge.parts[0].astype(np.int64)] == kept)
    assert np.all(state.table[merge.parts[1].astype(np.int64)] == kept)
    # no current candidate names a segment that is gone; the merged one has fresh ones
    for c in queue.candidates.values():
        assert all(state.has_segment(s) for s in c.segments)
    assert any(kept in c.segments for c in queue.candidates.values())
    split = next(c for c in queue.pending("split"))
    (s,) = split.segments
    side = split.parts[0].astype(np.int64)
    queue.accept(split.id, history=history)
    new = set(state.table[side].tolist())
    assert len(new) == 1 and s not in new  # the smaller side gets a new id
    rest = set(state.table[split.parts[1].astype(np.int64)].tolist())
    assert rest == {s}
    assert [e.edit.kind for e in history.entries] == ["merge", "split"]
    history.undo()
    history.undo()
    assert np.array_equal(state.table, table_before)


def test_learned_ranking_retrains_and_reranks(result):
    queue = ReviewQueue(fresh_state(result), ranking="learned", retrain_every=0)
    merges = queue.pending("merge")
    for c in merges[:6]:
        queue.reject(c.id)
    for c in merges[6:12]:
        queue.answers.append((c, True))  # as if accepted elsewhere
        queue.status[c.id] = "accepted"
    before = dict(queue.scores)
    queue.retrain()
    assert queue.scorer.fitted_kinds == ["merge"]
    changed = [i for i in queue.scores if queue.scores[i] != before.get(i)]
    assert changed
    assert queue.next() is queue.pending()[0]


def test_random_order_depends_on_the_seed(result):
    a = [c.id for c in ReviewQueue(fresh_state(result), ranking="random", seed=1).pending()]
    b = [c.id for c in ReviewQueue(fresh_state(result), ranking="random", seed=2).pending()]
    assert sorted(a) == sorted(b) and a != b
    with pytest.raises(ValueError, match="ranking"):
        ReviewQueue(fresh_state(result), ranking="best")


def test_statuses_round_trip_on_a_rebuilt_queue(result):
    queue = ReviewQueue(fresh_state(result), ranking="static")
    c1, c2 = queue.pending()[:2]
    queue.reject(c1.id)
    queue.skip(c2.id)
    saved = queue.statuses()
    assert saved == {c1.id: "rejected", c2.id: "skipped"}
    again = ReviewQueue(fresh_state(result), ranking="static")
    again.load_statuses(saved)
    assert again.status[c1.id] == "rejected" and again.status[c2.id] == "skipped"
    assert c1.id not in [c.id for c in again.pending()]
    with pytest.raises(ValueError, match="status"):
        again.load_statuses({c1.id: "maybe"})


def test_observe_a_user_merge_counts_as_an_accepted_candidate(result):
    state = fresh_state(result)
    queue = ReviewQueue(state, ranking="static")
    c = queue.pending("merge")[0]
    history = History(state)
    history.merge(*c.segments)
    queue.observe_edit(history.entries[-1].edit._change, "merge", c.segments)
    assert queue.status[c.id] == "accepted"
    assert queue.answers[-1] == (c, True)
    assert all(state.has_segment(s) for x in queue.candidates.values() for s in x.segments)


def test_split_seeds_lie_in_their_fragments_and_are_found_in_its_box_only(result):
    state = fresh_state(result)
    queue = ReviewQueue(state, ranking="static")
    split = queue.pending("split")[0]
    edit = queue.edit_for(split.id)
    for part, group in zip(split.parts, edit.seeds, strict=True):
        for fragment, seed in zip(part, group, strict=True):
            assert state.fragments[seed] == fragment

    class BoxReadsOnly:  # the whole fragment volume may not be read
        def __init__(self, array):
            self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, 3

        def __getitem__(self, key):
            out = self.array[key]
            assert out.size < self.array.size, "the whole fragment volume was read"
            return out

        def __array__(self, *args, **kwargs):
            raise AssertionError("the whole fragment volume was read")

    state.fragments = BoxReadsOnly(state.fragments)
    queue._seeds.clear()
    assert queue.edit_for(split.id).seeds == edit.seeds


def test_unanswer_makes_an_undone_fix_pending_and_old_answers_still_teach(result):
    state = fresh_state(result)
    history = History(state)
    queue = ReviewQueue(state, ranking="learned")
    merge = queue.pending("merge")[0]
    change = queue.accept(merge.id, history=history)
    history.undo()
    touched = {int(s) for s in change.table.new} | set(map(int, merge.segments))
    queue.unanswer(merge.id, touched)
    assert queue.status.get(merge.id, "pending") == "pending"
    assert all(c.id != merge.id for c, _ in queue.answers)
    fresh = ReviewQueue(fresh_state(result), ranking="learned")
    fresh.load_examples([merge], [True])
    fresh.load_examples([merge], [True])  # the same answer is not counted twice
    assert [(c.id, wrong) for c, wrong in fresh.answers] == [(merge.id, True)]
