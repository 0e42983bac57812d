import numpy as np
import pytest

from napari_connectome.core.proofreading import ProofreadingState
from napari_connectome.core.region_graph import build_region_graph
from napari_connectome.core.review_candidates import (
    MERGE_FEATURES,
    SPLIT_FEATURES,
    CandidateBuilder,
    CandidateConfig,
    pair_entropy,
)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation((4, 96, 96), seed=2, noise=0.3)


def fresh_state(result):
    state = ProofreadingState.from_result(result)
    state.fragments = state.fragments.copy()
    return state


def strip_state(boundary_between_23: float):
    """Four fragments in a row, 1-2 and 3-4 clearly joined; 2-3 as given."""
    frag = np.zeros((1, 4, 16), np.uint64)
    for i in range(4):
        frag[0, :, 4 * i : 4 * i + 4] = i + 1
    bnd = np.full(frag.shape, 0.05, np.float32)
    bnd[0, :, 7:9] = boundary_between_23
    bnd[0, :, 3:5] = 0.1
    bnd[0, :, 11:13] = 0.1
    graph = build_region_graph(frag, bnd)
    return graph, frag


def test_pair_entropy_is_the_voi_of_joining_two_sides():
    assert pair_entropy(4, 4) == pytest.approx(8.0)  # 8 voxels, 1 bit each
    assert pair_entropy(0, 5) == 0.0
    assert pair_entropy(1, 1000) < pair_entropy(500, 501)


def test_merge_and_split_candidates_carry_fix_location_and_features(result):
    state = fresh_state(result)
    cands = CandidateBuilder(state).derive()
    kinds = {c.kind for c in cands}
    assert kinds == {"merge", "split"}
    shape = state.fragments.shape
    for c in cands:
        assert all(0 <= x < n for x, n in zip(c.location, shape, strict=True))
        assert 0 < c.prior < 1 and c.importance > 0
        if c.kind == "merge":
            a, b = c.segments
            assert len(c.features) == len(MERGE_FEATURES)
            assert np.array_equal(c.parts[0], state.segment_fragments(a))
            assert all(s.start <= x < s.stop for x, s in zip(c.location, c.bbox, strict=True))
        else:
            (s,) = c.segments
            assert len(c.features) == len(SPLIT_FEATURES)
            side, rest = c.parts
            whole = np.sort(np.concatenate([side, rest]))
            assert np.array_equal(whole, state.segment_fragments(s))  # a partition
            assert len(side) and len(rest) and not np.intersect1d(side, rest).size
    ids = [c.id for c in cands]
    assert len(set(ids)) == len(ids)


def test_merge_candidates_are_adjacent_segments_and_preview_shows_the_fix(result):
    state = fresh_state(result)
    c = next(c for c in CandidateBuilder(state).derive() if c.kind == "merge")
    labels = state.labels_in(c.bbox)
    preview = c.preview_labels(state)
    a, b = c.segments
    assert np.array_equal(preview == 1, np.isin(labels, [a, b]))
    split = next(c for c in CandidateBuilder(state).derive() if c.kind == "split")
    preview = split.preview_labels(state)
    frags = state.fragments[split.bbox]
    assert np.array_equal(preview == 1, np.isin(frags, split.parts[0]))
    assert np.array_equal(preview == 2, np.isin(frags, split.parts[1]))


def test_prior_prefers_weak_boundaries_between_segments():
    # 2-3 contact with a weak boundary (0.55) vs a strong one (0.85): both above the
    # threshold, so 1-2 and 3-4 are segments; the weak one is the likelier false split
    priors = []
    for value in (0.55, 0.85):
        graph, frag = strip_state(value)
        table = np.array([0, 1, 1, 2, 2], np.uint32)
        state = ProofreadingState(frag, graph, table)
        merges = [c for c in CandidateBuilder(state).derive() if c.kind == "merge"]
        assert [c.segments for c in merges] == [(1, 2)]
        priors.append(merges[0].prior)
    assert priors[0] > priors[1]


def test_split_of_a_false_merge_cuts_the_weak_contact():
    graph, frag = strip_state(0.45)
    table = np.array([0, 1, 1, 1, 1], np.uint32)  # everything merged
    state = ProofreadingState(frag, graph, table)
    splits = [c for c in CandidateBuilder(state).derive() if c.kind == "split"]
    sides = {tuple(sorted(c.parts[0].tolist())) for c in splits}
    assert (1, 2) in sides or (3, 4) in sides  # the last merge: across the 2-3 contact
    assert len({c.id for c in splits}) == len(splits)  # the spectral cut is the same cut
    weak = max(c.prior for c in splits if sorted(c.parts[0].tolist()) in ([1, 2], [3, 4]))
    strong = [c.prior for c in splits if c.parts[0].tolist() in ([1], [4])]
    assert strong and weak > max(strong)  # cutting a confident contact is less likely right


def test_derive_for_some_segments_only_touches_them(result):
    state = fresh_state(result)
    builder = CandidateBuilder(state)
    everything = builder.derive()
    s = int(state.segments[0])
    local = builder.derive([s])
    assert local and all(s in c.segments for c in local)
    ids = {c.id for c in everything}
    assert {c.id for c in local} <= ids
    assert builder.derive([10**9]) == []


def test_config_limits_the_queue(result):
    state = fresh_state(result)
    few = CandidateBuilder(state, CandidateConfig(merge_cap=0.6, split_depth=1)).derive()
    many = CandidateBuilder(state, CandidateConfig(merge_cap=1.0, split_depth=6)).derive()
    assert len(few) < len(many)
    assert all(c.features[0] <= 0.6 for c in few if c.kind == "merge")
