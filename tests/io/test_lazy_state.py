"""A proofreading state whose volumes stay on disk: same edits, same labels, bounded reads."""

import numpy as np
import pytest
import zarr

from napari_connectome.core.edits import LockEdit, MergeEdit, SplitEdit
from napari_connectome.io import read_segmentation_store
from napari_connectome.io.journal import open_proofreading
from napari_connectome.io.lazy_state import (
    PatchedVolume,
    ScaledVolume,
    lazy_state_from_store,
    open_corrected,
)

VOXEL = (40.0, 4.0, 4.0)
SHAPE = (8, 96, 96)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation(SHAPE, seed=5)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", VOXEL)


# ----------------------------------------------------------------- PatchedVolume
def test_patched_volume_reads_and_writes_like_numpy(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, (6, 20, 30)).astype(np.uint64)
    arr = zarr.create_array(tmp_path / "a.zarr", shape=data.shape, chunks=(2, 8, 8), dtype="u8")
    arr[...] = data
    vol, ref = PatchedVolume(arr), data.copy()
    assert vol.shape == ref.shape and vol.dtype == np.uint64
    for _ in range(30):
        lo = [int(rng.integers(0, n)) for n in ref.shape]
        hi = [int(rng.integers(a + 1, n + 1)) for a, n in zip(lo, ref.shape, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        crop = vol[box]
        np.testing.assert_array_equal(crop, ref[box])
        where = np.nonzero(rng.random(crop.shape) < 0.3)
        new = rng.integers(100, 200, len(where[0])).astype(np.uint64)
        crop[where] = new  # as a voxel split writes: volume[box][coords] = ids
        ref[box][where] = new
        crop.astype(np.int64)[...] = 0  # a derived copy does not write through
    np.testing.assert_array_equal(vol[...], ref)
    np.testing.assert_array_equal(vol[2:4], ref[2:4])
    pts = rng.integers(0, 6, 5), rng.integers(0, 20, 5), rng.integers(0, 30, 5)
    np.testing.assert_array_equal(vol[pts], ref[pts])
    assert vol[1, 2, 3] == ref[1, 2, 3]
    assert arr[...].tolist() == data.tolist()  # the store is never written
    with pytest.raises(TypeError, match="box by box"):
        np.asarray(vol)
    with pytest.raises(IndexError, match="step 1"):
        vol[::2]
    with pytest.raises(IndexError, match="outside"):
        vol[(np.array([6]), np.array([0]), np.array([0]))]


def test_scaled_volume_matches_whole_conversion(tmp_path, store):
    stored = zarr.open_group(store, mode="r")
    bnd = stored["boundaries"]
    vol = ScaledVolume(bnd, 1 / 255)
    whole = bnd[...].astype(np.float32) * np.float32(1 / 255)
    box = (slice(1, 5), slice(10, 70), slice(3, 90))
    np.testing.assert_array_equal(vol[box], whole[box])
    assert vol[box].dtype == np.float32


# -------------------------------------------------------------- the lazy state
def _voxels(state, fragment, rng, count):
    box = state.fragment_bbox(fragment)
    where = np.argwhere(np.asarray(state.fragments[box]) == fragment)
    if len(where) < count:
        return None
    pick = rng.choice(len(where), size=count, replace=False)
    return [[int(c) for c in where[i] + [s.start for s in box]] for i in pick]


def proofread(history, steps, seed):
    """Random merges, splits (in one fragment and across fragments), locks, undo, redo."""
    state, rng = history.state, np.random.default_rng(seed)
    voxel_splits = 0
    for _ in range(steps):
        r = rng.random()
        if r < 0.1 and history.can_undo:
            history.undo()
            continue
        if r < 0.15 and history.can_redo:
            history.redo()
            continue
        free = [s for s in state.segments.tolist() if not state.is_locked(s)]
        if r < 0.22:
            history.do(LockEdit(int(rng.choice(free)), True))
            continue
        if r < 0.5:
            a, b = rng.choice(free, size=2, replace=False)
            history.do(MergeEdit(int(a), int(b)))
            continue
        s = int(rng.choice(free))
        frags = state.segment_fragments(s)
        if len(frags) >= 2 and r < 0.7:
            f, g = rng.choice(frags, size=2, replace=False)
            seeds = [_voxels(state, int(f), rng, 1), _voxels(state, int(g), rng, 1)]
        else:
            pair = _voxels(state, int(rng.choice(frags)), rng, 2)
            if pair is None:
                continue
            seeds, voxel_splits = [[pair[0]], [pair[1]]], voxel_splits + 1
        history.do(SplitEdit(s, seeds))
    return voxel_splits


def test_replay_on_the_lazy_state_gives_the_same_labels(store):
    session = open_proofreading(store)
    assert proofread(session.history, 40, seed=3) >= 3
    session.close()
    want = session.state
    corrected = open_corrected(store)
    state = corrected.state
    assert corrected.edits == len(session.history.entries)
    assert isinstance(state.fragments, PatchedVolume) and state.fragments.n_written > 0
    full = read_segmentation_store(store).graph.edges
    assert 0 < len(corrected.stored.graph.edges) < len(full)  # the edited segments' only
    np.testing.assert_array_equal(state.table, want.table)
    assert state.locked == want.locked and state.next_segment_id == want.next_segment_id
    state.fragments.reads.clear()
    out = np.zeros(SHAPE, dtype=state.table.dtype)
    block = (3, 40, 50)
    for z in range(0, SHAPE[0], block[0]):
        for y in range(0, SHAPE[1], block[1]):
            for x in range(0, SHAPE[2], block[2]):
                box = (slice(z, z + block[0]), slice(y, y + block[1]), slice(x, x + block[2]))
                out[box] = state.labels_in(box)
    np.testing.assert_array_equal(out, want.labels_in(None))
    assert max(state.fragments.reads) <= np.prod(block)  # one box per read
    patched = corrected.patched_box()
    changed = np.asarray(zarr.open_array(store / "fragments", mode="r")[...]) != want.fragments
    outside = np.ones(SHAPE, dtype=bool)
    outside[patched] = False
    assert changed.any() and not changed[outside].any()


def test_lazy_state_without_journal(store, result):
    state = lazy_state_from_store(store)
    box = (slice(0, 4), slice(0, 50), slice(20, 96))
    np.testing.assert_array_equal(
        state.labels_in(box), result.table_at(0.5)[result.fragments][box]
    )
    assert state.fragments.n_written == 0 and open_corrected(store).patched_box() is None


def test_merges_and_locks_need_no_edges(store):
    session = open_proofreading(store)
    segs = session.state.segments.tolist()
    session.history.merge(segs[0], segs[1])
    session.history.do(LockEdit(segs[2], True))
    session.close()
    corrected = open_corrected(store)
    assert len(corrected.state.graph.edges) == 0 and corrected.edits == 2
    assert corrected.state.graph.n_fragments == session.state.n_fragments
    np.testing.assert_array_equal(corrected.state.table, session.state.table)
    box = (slice(0, 8), slice(0, 96), slice(0, 96))
    np.testing.assert_array_equal(corrected.state.labels_in(box), session.state.labels_in(None))
