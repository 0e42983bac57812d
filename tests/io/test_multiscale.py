"""Tests for napari_connectome.io.multiscale: lazy levels and the read-time pyramid."""

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_connectome.io import multiscale
from napari_connectome.io.multiscale import (
    StridedView,
    as_dask,
    downsample_factors,
    lazy_pyramid,
    level_chunks,
    needs_pyramid,
    viewing_levels,
)


@pytest.fixture
def store(tmp_path):
    z = zarr.open_array(
        str(tmp_path / "a.zarr"), mode="w", shape=(4, 64, 48), chunks=(1, 16, 16), dtype="uint16"
    )
    z[:] = np.arange(4 * 64 * 48, dtype=np.uint16).reshape(4, 64, 48)
    return z


@pytest.fixture
def chunk_reads(monkeypatch):
    """Record the keys read from local zarr stores."""
    from zarr.storage import LocalStore

    reads, original = [], LocalStore.get

    async def get(self, key, *args, **kwargs):
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", get)
    return reads


def test_as_dask_reads_only_the_chunks_a_slice_touches(store, chunk_reads):
    lazy = as_dask(store)
    assert isinstance(lazy, da.Array)
    chunk_reads.clear()
    part = lazy[1, 10:20, 30:40].compute()
    assert sorted(chunk_reads) == ["c/1/0/1", "c/1/0/2", "c/1/1/1", "c/1/1/2"]
    np.testing.assert_array_equal(part, store[1, 10:20, 30:40])
    assert as_dask(lazy) is lazy
    plain = as_dask(np.zeros((3, 4), np.uint8))
    assert isinstance(plain, da.Array) and plain.shape == (3, 4)


def test_a_huge_store_stays_a_small_graph_and_reads_only_its_box(tmp_path, chunk_reads):
    shape = (400, 20000, 20000)  # 160 GB, 640,000 chunks, nothing written
    huge = zarr.create_array(
        str(tmp_path / "huge.zarr"), shape=shape, chunks=(1, 512, 512), dtype="uint8"
    )
    huge[7, 600:700, 1100:1200] = 5
    lazy = as_dask(huge)
    assert lazy.npartitions < 20_000  # whole multiples of the store's chunks
    assert all(c % 512 == 0 for c in lazy.chunks[1][:-1])
    chunk_reads.clear()
    box = lazy[7, 500:1030, 1090:1210].compute()  # rows across chunks 0..2, columns in 2
    assert int((box == 5).sum()) == 100 * 100
    assert sorted(chunk_reads) == ["c/7/0/2", "c/7/1/2", "c/7/2/2"]
    levels = lazy_pyramid(huge, (40, 4, 4))
    chunk_reads.clear()
    tile = levels[2][7, 150:175, 275:300].compute()  # stride 4: y 600..700, x 1100..1200
    assert tile.shape == (25, 25) and (tile == 5).all()
    assert sorted(chunk_reads) == ["c/7/1/2"]


def test_level_chunks_one_section_deep_and_multiples_in_plane():
    chunks = level_chunks((2000, 20000, 20000), np.uint8, (1, 512, 512))
    assert set(chunks[0]) == {1}
    assert all(c % 512 == 0 for c in chunks[1][:-1]) and chunks[1][0] * chunks[2][0] <= 2**25
    assert level_chunks((30, 512, 512), np.uint8, None) == ((1,) * 30, (512,), (512,))
    iso = level_chunks((400, 400, 400), np.uint8, (64, 64, 64))
    assert iso[0][0] == 64  # the file's own chunk depth
    assert level_chunks((20000, 20000), np.uint16, (512, 512))[0][0] % 512 == 0


def test_strided_view_slices_like_numpy():
    array = np.arange(5 * 9 * 7).reshape(5, 9, 7)
    view = StridedView(array, (2, 3, 2))
    expected = array[::2, ::3, ::2]
    assert view.shape == expected.shape == (3, 3, 4) and view.dtype == array.dtype
    for key in [
        (slice(None),),
        (1,),
        (-1, slice(0, 2)),
        (Ellipsis, 3),
        (slice(1, 3), 2, slice(None, None, 2)),
    ]:
        np.testing.assert_array_equal(view[key], expected[key])
    with pytest.raises(IndexError):
        view[3]


def test_needs_pyramid_by_plane_side_and_voxels(monkeypatch):
    assert not needs_pyramid((30, 512, 512))
    assert needs_pyramid((3, 512, 5000))
    assert needs_pyramid((2000, 2048, 2048))
    assert not needs_pyramid((10,))
    monkeypatch.setattr(multiscale, "LAZY_PYRAMID_VOXELS", 1000)
    assert needs_pyramid((10, 20, 20))


def test_lazy_pyramid_strides_and_reads_lazily(store, monkeypatch):
    monkeypatch.setattr(multiscale, "LAZY_PYRAMID_MAX_SIZE", 16)
    levels = lazy_pyramid(store, voxel_size=(40, 4, 4))  # anisotropic: z kept while it is
    assert [lv.shape for lv in levels] == [(4, 64, 48), (4, 32, 24), (4, 16, 12)]
    np.testing.assert_array_equal(levels[2].compute(), store[:, ::4, ::4])
    iso = lazy_pyramid(store)  # isotropic: every axis halved
    assert iso[1].shape == (2, 32, 24)
    np.testing.assert_array_equal(iso[1].compute(), store[::2, ::2, ::2])
    assert downsample_factors(levels) == [(1.0, 1.0, 1.0), (1.0, 2.0, 2.0), (1.0, 4.0, 4.0)]


def test_viewing_levels_keeps_numpy_and_wraps_stores(store, monkeypatch):
    array = np.zeros((2, 8, 8), np.uint32)
    [same] = viewing_levels([array])
    assert same is array  # loaded or memory-mapped data stay writable numpy
    [wrapped] = viewing_levels([store])
    assert isinstance(wrapped, da.Array)
    coarse = store[:, ::2, ::2]  # read into numpy
    pyramid = viewing_levels([store, coarse])
    assert isinstance(pyramid[0], da.Array) and pyramid[1] is coarse
    monkeypatch.setattr(multiscale, "LAZY_PYRAMID_PLANE_PX", 32)
    monkeypatch.setattr(multiscale, "LAZY_PYRAMID_MAX_SIZE", 32)
    assert len(viewing_levels([store], (40, 4, 4))) == 2
