"""Proofreading state, edits and history: local, exact, undoable."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.sparse.csgraph import connected_components

from napari_connectome.core.proofreading import (
    History,
    LockEdit,
    LockedSegmentError,
    MergeEdit,
    ProofreadingState,
    SplitEdit,
)
from napari_connectome.core.region_graph import build_region_graph

GRAPH_FIELDS = (
    "edges",
    "contact_area",
    "contact_weight",
    "score_sum",
    "max_score",
    "quantile_score",
    "fragment_sizes",
    "fragment_bboxes",
)
VOXEL_SIZE = (40.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def results(phantom_segmentation):
    return {seed: phantom_segmentation((6, 128, 128), seed=seed, noise=0.05) for seed in (0, 1)}


def fresh(result, threshold=0.5):
    """A state on a copy of the result's fragments (voxel splits edit them in place)."""
    return ProofreadingState.from_result(
        dataclasses.replace(result, fragments=result.fragments.copy()), threshold
    )


@pytest.fixture
def state(results):
    return fresh(results[0])


def voxel_of(state, fragment, rng, count=1):
    """Random distinct voxels of a fragment (searched in its box only)."""
    box = state.fragment_bbox(fragment)
    where = np.argwhere(state.fragments[box] == fragment)
    pick = rng.choice(len(where), size=count, replace=False)
    return [tuple(int(c) for c in where[i] + [s.start for s in box]) for i in pick]


def random_edit(state, rng):
    """A valid random merge, split (graph or voxel level), lock or unlock."""
    free = [s for s in state.segments.tolist() if not state.is_locked(s)]
    r = rng.random()
    if state.locked and r < 0.1:
        return LockEdit(sorted(state.locked)[0], False)
    if r < 0.2 and free:
        return LockEdit(int(rng.choice(free)), True)
    if r < 0.5 and len(free) >= 2:
        a, b = rng.choice(free, size=2, replace=False)
        return MergeEdit(int(a), int(b))
    for s in rng.permutation(free).tolist():
        frags = state.segment_fragments(s)
        sizes = state.graph.fragment_sizes[frags.astype(np.int64)]
        if len(frags) >= 3 and rng.random() < 0.6:
            picks = rng.choice(frags, size=int(rng.integers(2, 4)), replace=False)
            return SplitEdit(s, [voxel_of(state, int(f), rng) for f in picks])
        big = frags[sizes >= 4]
        if len(big):
            f = int(rng.choice(big))
            a, b = voxel_of(state, f, rng, 2)
            return SplitEdit(s, [[a], [b]])
    return None


def check_index(state):
    """Per-segment fragments, sizes and boxes equal a brute-force recomputation."""
    labels = state.segmentation().astype(np.int64)
    objects = ndi.find_objects(labels)
    counts = np.bincount(labels.ravel(), minlength=state.next_segment_id)
    table = state.table
    present = set(np.unique(table[1:]).tolist()) - {0}
    assert set(state.segments.tolist()) == present
    for s in present:
        assert np.array_equal(state.segment_fragments(s), np.flatnonzero(table == s))
        assert state.segment_size(s) == counts[s]
        assert state.segment_bbox(s) == objects[s - 1]


def snapshot(state):
    return state.table.copy(), state.fragments.copy(), set(state.locked)


def assert_same(state, snap):
    table, fragments, locked = snap
    assert np.array_equal(state.table, table)
    assert np.array_equal(state.fragments, fragments)
    assert set(state.locked) == locked


def assert_graph_equal(a, b):
    for name in GRAPH_FIELDS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def outside(box, a, b):
    """Whether two arrays are equal outside ``box``."""
    diff = a != b
    diff[box] = False
    return not diff.any()


@pytest.mark.parametrize("seed", range(6))
def test_random_edits_are_local_and_undo_redo_round_trip(results, seed):
    result = results[seed % 2]
    state = fresh(result)
    rng = np.random.default_rng(seed)
    original = snapshot(state)
    history = History(state, user="tester")
    used = set(state.segments.tolist())
    for step in range(30):
        edit = random_edit(state, rng)
        if edit is None:
            break
        labels, frags = state.segmentation(), state.fragments.copy()
        before = set(state.segments.tolist())
        box = history.do(edit)
        assert outside(box, labels, state.segmentation()), edit
        assert outside(box, frags, state.fragments), edit
        new = set(state.segments.tolist()) - before
        assert not new & used, f"{edit} reused ids {new & used}"
        used |= new
        if step % 5 == 0:
            check_index(state)
        if rng.random() < 0.2:  # undo and redo in the middle
            history.undo()
            assert np.array_equal(state.segmentation(), labels)
            assert np.array_equal(state.fragments, frags)
            history.redo()
    check_index(state)
    done = snapshot(state)
    graph_done = state.graph
    history.undo_to(0)
    assert_same(state, original)
    assert state.n_fragments == result.graph.n_fragments
    assert_graph_equal(state.graph, result.graph)
    check_index(state)
    while history.can_redo:
        history.redo()
    assert_same(state, done)
    assert_graph_equal(state.graph, graph_done)
    check_index(state)


def test_index_built_once_matches_brute_force(results):
    for result in results.values():
        check_index(fresh(result))
        check_index(fresh(result, threshold=0.0))


def test_merge_keeps_the_larger_id_and_touches_no_voxel(state):
    a, b = (int(s) for s in state.segments[:2])
    big, small = (a, b) if state.segment_size(a) >= state.segment_size(b) else (b, a)
    frags, size = state.fragments.copy(), state.segment_size(big) + state.segment_size(small)
    small_box = state.segment_bbox(small)
    history = History(state)
    box = history.merge(small, big)
    assert box == small_box  # only the smaller segment's voxels change their label
    assert not state.has_segment(small)
    assert state.segment_size(big) == size
    assert np.array_equal(state.fragments, frags)
    assert history.entries[-1].description == f"merge {small} + {big}"
    assert history.entries[-1].edit.result == {"segment": big}
    history.undo()
    assert state.has_segment(small) and state.segment_bbox(small) == small_box


def test_split_parts_are_connected(state):
    rng = np.random.default_rng(3)
    s = max(state.segments.tolist(), key=lambda s: len(state.segment_fragments(s)))
    frags = state.segment_fragments(s)
    seeds = [voxel_of(state, int(f), rng) for f in (frags[0], frags[len(frags) // 2], frags[-1])]
    history = History(state)
    history.split(s, seeds)
    edit = history.entries[-1].edit
    assert history.entries[-1].description == f"split {s} into 3 parts"
    ids = edit.result["segments"]
    assert len(set(ids)) == 3 and s in ids
    edges = state.graph.edges.astype(np.int64)
    table = state.table.astype(np.int64)
    for part, seg in enumerate(ids):
        assert state.segment_at(seeds[part][0]) == seg
        members = state.segment_fragments(seg).astype(np.int64)
        inside = (table[edges[:, 0]] == seg) & (table[edges[:, 1]] == seg)
        local = np.searchsorted(members, edges[inside])
        n = len(members)
        adjacency = np.zeros((n, n), bool)
        adjacency[local[:, 0], local[:, 1]] = True
        assert connected_components(adjacency, directed=False)[0] == 1
        box = state.segment_bbox(seg)
        assert ndi.label(state.labels_in(box) == seg)[1] == 1


def test_voxel_split_inside_one_fragment(state, results):
    rng = np.random.default_rng(0)
    result = results[0]
    n = state.n_fragments
    s = int(state.segments[0])
    f = int(max(state.segment_fragments(s), key=lambda f: result.graph.fragment_sizes[f]))
    fbox = state.fragment_bbox(f)
    a, b = voxel_of(state, f, rng, 2)
    before = state.fragments.copy()
    history = History(state)
    box = history.split(s, [[a], [b]])
    assert outside(fbox, before, state.fragments)  # only the fragment's box was written
    assert state.n_fragments > n
    pieces = [f, *range(n + 1, state.n_fragments + 1)]
    crop = state.fragments[fbox]
    for piece in pieces:  # every piece is connected
        assert ndi.label(crop == piece)[1] == 1
    assert np.isin(crop, pieces).sum() == (before[fbox] == f).sum()
    assert all(sl.start <= o.start and o.stop <= sl.stop for sl, o in zip(box, fbox, strict=True))
    rebuilt = build_region_graph(state.fragments, result.boundaries, VOXEL_SIZE)
    graph = state.graph
    for name in GRAPH_FIELDS:
        assert np.allclose(getattr(graph, name), getattr(rebuilt, name)), name
    assert state.segment_at(a) != state.segment_at(b)
    check_index(state)
    history.undo()
    assert np.array_equal(state.fragments, before) and state.n_fragments == n
    assert_graph_equal(state.graph, result.graph)


def test_locked_segments_refuse_edits(state):
    a, b, c = (int(s) for s in state.segments[:3])
    history = History(state)
    history.lock(a)
    snap = snapshot(state)
    with pytest.raises(LockedSegmentError, match=f"segment {a} is locked"):
        history.merge(a, b)
    with pytest.raises(LockedSegmentError):
        history.merge(c, b, a)
    f = int(state.segment_fragments(a)[0])
    voxel = voxel_of(state, f, np.random.default_rng(0), 2)
    with pytest.raises(LockedSegmentError):
        history.split(a, [[voxel[0]], [voxel[1]]])
    with pytest.raises(LockedSegmentError):
        state.preview_split(a, [[voxel[0]], [voxel[1]]])
    with pytest.raises(ValueError, match="already locked"):
        history.lock(a)
    assert_same(state, snap)
    assert len(history) == 1
    history.merge(b, c)  # others still work
    history.undo()
    history.undo()  # the lock
    assert not state.is_locked(a)
    history.merge(a, b)


def test_preview_does_not_mutate_and_matches_commit(state):
    rng = np.random.default_rng(1)
    s = int(state.segments[1])
    frags = state.segment_fragments(s)
    f = int(frags[0])
    a, b = voxel_of(state, f, rng, 2)
    seeds = [[a], [b], voxel_of(state, int(frags[-1]), rng)]
    snap, graph, n = snapshot(state), state.graph, state.n_fragments
    box = state.segment_bbox(s)
    preview = state.preview_split(s, seeds)
    labels = preview.part_labels()
    assert_same(state, snap)
    assert state.n_fragments == n and state.graph is graph
    assert preview.voxel_bbox is not None and preview.voxel_labels.max() >= 2
    history = History(state)
    history.split(s, seeds)
    ids = history.entries[-1].edit.result["segments"]
    assert ids == [preview.segment_ids[g] for g in range(3)]
    for g, part in preview.parts.items():
        assert np.array_equal(state.segment_fragments(ids[g]), part)
    after = state.labels_in(box)
    for g in range(3):
        assert np.array_equal(labels == g + 1, after == ids[g])


def test_new_ids_are_never_reused(state):
    rng = np.random.default_rng(2)
    s = max(state.segments.tolist(), key=lambda s: len(state.segment_fragments(s)))
    frags = state.segment_fragments(s)
    seeds = [voxel_of(state, int(frags[0]), rng), voxel_of(state, int(frags[-1]), rng)]
    history = History(state)
    history.split(s, seeds)
    first = set(history.entries[-1].edit.result["segments"]) - {s}
    history.undo()
    history.split(s, seeds)
    second = set(history.entries[-1].edit.result["segments"]) - {s}
    assert min(second) > max(first)
    history.undo()
    history.redo()  # redo gives the same ids again
    assert set(history.entries[-1].edit.result["segments"]) - {s} == second


def test_history_bookkeeping(state):
    a, b, c, d = (int(s) for s in state.segments[:4])
    history = History(state, user="alice")
    history.merge(a, b)
    history.merge(c, d)
    history.lock(a if state.has_segment(a) else b)
    assert [e.description.split()[0] for e in history.entries] == ["merge", "merge", "lock"]
    assert all(e.user == "alice" and e.time.endswith("+00:00") for e in history.entries)
    history.undo_to(1)
    assert len(history) == 1 and len(history.redo_entries) == 2
    history.merge(c, d)
    assert not history.can_redo  # a new edit clears the redo stack
    assert history.undo_to(0) is not None
    assert history.undo() is None and history.redo() is not None
    with pytest.raises(IndexError):
        history.undo_to(5)
    # undo entries are compact: a few bytes per changed table entry
    assert 0 < history.nbytes < 64 * state.n_fragments
    assert history.nbytes < state.fragments.nbytes / 100


def test_failed_listener_rolls_back(state):
    history = History(state)
    snap = snapshot(state)

    def broken(action, entry):
        raise OSError("disk full")

    history.listeners.append(broken)
    a, b = (int(s) for s in state.segments[:2])
    with pytest.raises(OSError, match="disk full"):
        history.merge(a, b)
    assert_same(state, snap)
    assert not history.can_undo
    check_index(state)


def test_bad_edits_are_refused_clearly(state):
    a, b = (int(s) for s in state.segments[:2])
    frags_a, frags_b = state.segment_fragments(a), state.segment_fragments(b)
    rng = np.random.default_rng(0)
    in_a, in_b = voxel_of(state, int(frags_a[0]), rng), voxel_of(state, int(frags_b[0]), rng)
    history = History(state)
    with pytest.raises(ValueError, match="no segment"):
        history.merge(a, 10**6)
    with pytest.raises(ValueError, match="distinct"):
        history.merge(a, a)
    with pytest.raises(ValueError, match="two or more seed groups"):
        history.split(a, [in_a])
    with pytest.raises(ValueError, match=f"not in segment {a}"):
        history.split(a, [in_a, in_b])
    with pytest.raises(ValueError, match="two seed groups"):
        history.split(a, [in_a, in_a])
    with pytest.raises(ValueError, match="outside"):
        history.split(a, [in_a, [(99, 0, 0)]])
    with pytest.raises(IndexError):
        state.segment_at((0, -1, 0))
    edit = MergeEdit(a, b)
    with pytest.raises(RuntimeError, match="apply"):
        edit.inverse()
    history.do(edit)
    inverse = edit.inverse()
    state.apply(inverse)
    with pytest.raises(ValueError, match="in order"):
        state.apply(inverse)  # already undone: refused, nothing changes
    check_index(state)


def test_labels_in_reads_only_the_region(state):
    box = (slice(1, 3), slice(10, 40), slice(5, 20))
    expected = state.table[state.fragments[box].astype(np.int64)]
    assert np.array_equal(state.labels_in(box), expected)
    assert state.segment_at((1, 10, 5)) == expected[0, 0, 0]
