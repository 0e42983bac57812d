import numpy as np
import pytest

from napari_connectome.core.metrics import evaluate_segmentation
from napari_connectome.core.proofreading import ProofreadingState
from napari_connectome.core.review_queue import ReviewQueue
from napari_connectome.core.review_simulation import (
    SegmentContingency,
    fragment_floor,
    simulate_review,
)
from napari_connectome.synthetic import make_phantom

SHAPE = (6, 128, 128)
SEED = 3


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation(SHAPE, seed=SEED, noise=0.4)


@pytest.fixture(scope="module")
def truth():
    return make_phantom(SHAPE, (40.0, 4.0, 4.0), seed=SEED).neurons


def fresh_state(result):
    state = ProofreadingState.from_result(result)
    state.fragments = state.fragments.copy()
    return state


def scores(state, truth):
    s = evaluate_segmentation(state.segmentation(), truth)
    return {k: s[k] for k in ("voi_split", "voi_merge", "voi", "arand")}


def test_incremental_scores_match_the_metrics_after_edits(result, truth):
    state = fresh_state(result)
    tracker = SegmentContingency(state, truth)
    assert tracker.scores() == pytest.approx(scores(state, truth), abs=1e-9)
    queue = ReviewQueue(state, ranking="static")
    for _ in range(6):
        c = queue.next()
        predicted = tracker.scores()["voi"] + tracker.delta(c)
        change = queue.accept(c.id)
        tracker.update(set(change.table.old.tolist()) | set(change.table.new.tolist()))
        assert tracker.scores() == pytest.approx(scores(state, truth), abs=1e-9)
        assert tracker.scores()["voi"] == pytest.approx(predicted, abs=1e-9)


def test_floor_is_the_majority_label_table(result, truth):
    floor = fragment_floor(result.fragments, truth)
    frags = result.fragments
    n = int(frags.max())
    table = np.zeros(n + 1, np.int64)
    for f in range(1, n + 1):
        labels = truth[frags == f]
        labels = labels[labels > 0]
        table[f] = np.bincount(labels).argmax() if len(labels) else 10**6 + f
    expected = evaluate_segmentation(table[frags], truth)
    assert floor["voi"] == pytest.approx(expected["voi"], abs=1e-9)
    assert floor["arand"] == pytest.approx(expected["arand"], abs=1e-9)


def test_simulation_lowers_voi_towards_the_floor_and_reports_the_curve(result, truth):
    state = fresh_state(result)
    start = scores(state, truth)
    out = simulate_review(state, truth, ranking="learned", every=5)
    curve = out["curve"]
    assert curve[0]["decisions"] == 0 and curve[0]["voi"] == pytest.approx(start["voi"])
    assert curve[-1]["decisions"] == out["final"]["decisions"]
    steps = [p["decisions"] for p in curve]
    assert steps == sorted(steps) and all(s % 5 == 0 for s in steps[:-1])
    vois = [p["voi"] for p in curve]
    assert all(b <= a + 1e-12 for a, b in zip(vois, vois[1:], strict=False))  # only helping fixes
    assert out["final"]["queue_exhausted"]
    assert out["final"]["accepted"] > 0
    assert out["floor"]["voi"] <= out["final"]["voi"] < start["voi"]
    assert out["final"]["voi"] == pytest.approx(scores(state, truth)["voi"], abs=1e-9)
    assert out["queue_length"] > 0


def test_budget_stops_early_and_orders_differ(result, truth):
    out = simulate_review(fresh_state(result), truth, ranking="random", seed=1, budget=7)
    assert out["final"]["decisions"] == 7 and not out["final"]["queue_exhausted"]
    assert out["curve"][-1]["decisions"] == 7
    none = simulate_review(fresh_state(result), truth, budget=0)
    assert [p["decisions"] for p in none["curve"]] == [0]


def test_ranked_order_gains_faster_than_random(result, truth):
    def area(ranking, seed=0):
        curve = simulate_review(fresh_state(result), truth, ranking=ranking, seed=seed)["curve"]
        v = np.array([p["voi"] for p in curve])
        return float(np.sum(v - v[-1])), v[0] - v[-1]

    static, drop = area("static")
    randoms = [area("random", s)[0] for s in range(3)]
    assert drop > 0
    assert static < np.mean(randoms)


def test_truth_of_another_shape_is_refused(result):
    with pytest.raises(ValueError, match="shape"):
        simulate_review(fresh_state(result), np.zeros((2, 3, 4), np.uint32))
    with pytest.raises(ValueError, match="every"):
        simulate_review(fresh_state(result), np.zeros(SHAPE, np.uint32), every=0)
