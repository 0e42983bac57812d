"""Segment ids of a proofreading state as an array-like: same values as in memory, box reads."""

import numpy as np
import pytest

from napari_connectome.io.journal import open_proofreading, state_from_store
from napari_connectome.io.lazy_labels import LazyLabels

VOXEL = (40.0, 4.0, 4.0)
SHAPE = (6, 64, 80)


@pytest.fixture(scope="module")
def result(phantom_segmentation):
    return phantom_segmentation(SHAPE, seed=3)


@pytest.fixture
def store(tmp_path, result, write_store):
    return write_store(result, tmp_path / "seg.zarr", VOXEL)


@pytest.fixture
def lazy(store):
    session = open_proofreading(store, lazy=True)
    yield session
    session.close()


KEYS = [
    (2,),
    2,
    -1,
    (slice(None), 5),
    (1, slice(3, 40), slice(10, 70)),
    (Ellipsis, 7),
    (slice(1, 5), Ellipsis, slice(None, None, 3)),
    (slice(None, None, 2), slice(60, 10, -7), 4),
    (np.int64(3), slice(None), slice(None)),
    (slice(4, 4), slice(None), slice(None)),
]


@pytest.mark.parametrize("key", KEYS, ids=[str(k) for k in range(len(KEYS))])
def test_indexing_matches_the_labels_in_memory(store, lazy, key):
    expected = state_from_store(store).segmentation()
    labels = LazyLabels(lazy.state)
    assert labels.shape == SHAPE and labels.ndim == 3 and labels.dtype == expected.dtype
    assert len(labels) == SHAPE[0] and labels.size == expected.size
    got = labels[key]
    np.testing.assert_array_equal(got, expected[key])
    assert got.dtype == expected.dtype


def test_points_and_lift(store, lazy):
    expected = state_from_store(store).segmentation()
    labels = LazyLabels(lazy.state)
    rng = np.random.default_rng(0)
    pts = [rng.integers(0, n, 50) for n in SHAPE]
    np.testing.assert_array_equal(labels[tuple(pts)], expected[tuple(pts)])
    lifted = LazyLabels(lazy.state, lift=True)
    assert lifted.shape == (1, *SHAPE) and lifted.chunks[0] == 1
    np.testing.assert_array_equal(lifted[0, 3], expected[3])
    np.testing.assert_array_equal(lifted[:, 2:4, 5], expected[None, 2:4, 5])
    np.testing.assert_array_equal(lifted[(np.zeros(50, int), *pts)], expected[tuple(pts)])
    with pytest.raises(IndexError, match="outside"):
        lifted[1]
    with pytest.raises(IndexError, match="outside"):
        labels[(np.array([SHAPE[0]]), np.array([0]), np.array([0]))]
    with pytest.raises(IndexError, match="not both"):
        labels[np.array([0, 1]), :, 3]
    with pytest.raises(IndexError, match="too many"):
        labels[0, 0, 0, 0]


def test_a_plane_reads_that_plane_only_and_the_cache_serves_redraws(lazy):
    state, frags = lazy.state, lazy.state.fragments
    labels = LazyLabels(state)
    plane = SHAPE[1] * SHAPE[2]
    labels[3]
    labels[3]
    assert frags.reads == [plane]  # one read of one plane: the redraw came from the cache
    assert labels.reads == [(slice(3, 4), slice(0, SHAPE[1]), slice(0, SHAPE[2]))]
    # a merge changes the table only: the redraw shows it without reading again
    a, b = sorted(state.segments.tolist(), key=state.segment_size)[-2:]
    lazy.history.merge(a, b)
    np.testing.assert_array_equal(
        labels[3], state.labels_in((slice(3, 4), slice(None), slice(None)))[0]
    )
    assert len(frags.reads) == 1 + 1  # labels_in above; the layer's plane came from the cache
    # a split rewrites voxels: they are put on the kept planes, nothing is read again
    for z in range(SHAPE[0]):
        labels[z]
    n = len(frags.reads)
    # (two seeds in one fragment: that fragment's voxels are cut)
    fragment = int(np.argmax(state.graph.fragment_sizes[1:])) + 1
    seg = int(state.table[fragment])
    box = state.fragment_bbox(fragment)
    where = np.argwhere(np.asarray(state.fragments[box]) == fragment)
    seeds = [
        [tuple(int(c + s.start) for c, s in zip(where[i], box, strict=True))] for i in (0, -1)
    ]
    lazy.history.split(seg, seeds)
    assert frags.n_written
    n_labels = len(labels.reads)
    for history_step in (None, "undo", "redo"):
        if history_step:
            getattr(lazy.history, history_step)()
        for z in range(SHAPE[0]):
            plane = (slice(z, z + 1), slice(None), slice(None))
            np.testing.assert_array_equal(labels[z], state.labels_in(plane)[0])
    assert len(labels.reads) == n_labels  # every plane from the cache, edits put on
    assert len(frags.reads) > n  # (labels_in read the planes to compare)
    assert max(frags.reads) < frags.size  # no read of the whole volume, ever


def test_in_memory_state_and_refusals(store, lazy):
    state = state_from_store(store)
    labels = LazyLabels(state)
    np.testing.assert_array_equal(labels[2:4], state.segmentation()[2:4])
    assert labels.chunks is None and labels.nbytes == state.fragments.size * labels.dtype.itemsize
    with pytest.raises(TypeError, match="whole volume"):
        np.asarray(LazyLabels(lazy.state))
    with pytest.raises(TypeError, match="merge and split"):
        labels[0, 0, 0] = 3
    with pytest.raises(IndexError, match="cannot index"):
        labels["a"]
    small = LazyLabels(lazy.state, cache_bytes=SHAPE[1] * SHAPE[2] * 4)  # one uint32 plane
    small[0]
    small[1]
    small[0]
    assert len(small.reads) == 3 and len(small._cache) == 1  # noqa: SLF001
    none = LazyLabels(lazy.state, cache_bytes=1)  # a plane is over the budget: not kept
    none[0]
    none[0]
    assert len(none.reads) == 2 and not none._cache  # noqa: SLF001
    capped = LazyLabels(lazy.state, max_read_bytes=2 * SHAPE[1] * SHAPE[2] * 8)
    np.testing.assert_array_equal(capped[1:3], state.segmentation()[1:3])
    with pytest.raises(MemoryError, match="2D view"):
        capped[:]  # what napari's 3D view asks for
    assert len(capped.reads) == 1


def test_export_streams_the_corrected_labels_of_a_lazy_session(tmp_path, store, lazy):
    import zarr

    from napari_connectome.io.export import export_labels

    state = lazy.state
    a, b = sorted(state.segments.tolist(), key=state.segment_size)[-2:]
    lazy.history.merge(a, b)
    labels = LazyLabels(state)
    assert labels.chunks == tuple(zarr.open_group(str(store))["fragments"].chunks)
    dest = export_labels(
        labels, tmp_path / "out.ome.zarr", voxel_size=VOXEL, block_shape=(1, 32, 40)
    )
    assert max(state.fragments.reads) <= SHAPE[1] * SHAPE[2]  # plane by plane (its chunks)
    full = tuple(slice(0, n) for n in SHAPE)
    written = np.asarray(zarr.open_group(str(dest))["0"][...])
    np.testing.assert_array_equal(written, state.labels_in(full))


def test_a_plane_of_deep_chunks_keeps_its_slab(tmp_path, result, write_store):
    store = write_store(result, tmp_path / "iso.zarr", (4.0, 4.0, 4.0))  # chunks 6 deep here
    expected = state_from_store(store).segmentation()
    session = open_proofreading(store, lazy=True)
    frags = session.state.fragments
    assert frags.chunks[0] == SHAPE[0]
    labels = LazyLabels(session.state)
    for z in range(SHAPE[0]):
        np.testing.assert_array_equal(labels[z], expected[z])
    assert labels.reads == [(slice(0, 6), slice(0, SHAPE[1]), slice(0, SHAPE[2]))]
    assert len(frags.reads) == 1  # one slab (in pieces of chunk rows: one row here)
    tight = LazyLabels(session.state, cache_bytes=SHAPE[1] * SHAPE[2] * 4)  # one plane only
    np.testing.assert_array_equal(tight[2], expected[2])
    assert tight.reads == [(slice(2, 3), slice(0, SHAPE[1]), slice(0, SHAPE[2]))]
    session.close()
