from types import SimpleNamespace

import dask.array as da
import numpy as np
import pytest

from napari_connectome._widgets._scope import (
    MIN_REGION_PX,
    SCOPES,
    Region,
    describe_region,
    layer_voxel_size,
    level0,
    parse_voxel_size,
    pixel_range,
    read_region,
    region_problem,
    scope_region,
    slice_region,
    view_box,
    view_region,
    whole_region,
)


def test_pixel_range_uses_pixel_extents_and_clips():
    assert pixel_range(-0.5, 9.5, 10) == (0, 10)
    assert pixel_range(2.3, 5.5, 10) == (2, 6)
    assert pixel_range(2.3, 5.6, 10) == (2, 7)
    assert pixel_range(-50, 500, 10) == (0, 10)
    start, stop = pixel_range(20, 30, 10)
    assert start == stop == 10  # out of the data: empty


def test_view_box_from_camera():
    box = view_box((0.0, 100.0, 200.0), zoom=2.0, canvas_size=(80, 60))
    np.testing.assert_allclose(box, [[80, 185], [120, 215]])
    rotated = view_box((100.0, 200.0), zoom=2.0, canvas_size=(80, 60), rotated=True)
    np.testing.assert_allclose(rotated, [[75, 175], [125, 225]])  # radius hypot(80, 60) / 4


def test_whole_and_slice_regions():
    whole = whole_region((4, 96, 80))
    assert whole.shape == (4, 96, 80) and whole.covers((4, 96, 80))
    plane = slice_region((4, 96, 80), 2)
    assert plane.plane and plane.shape == (1, 96, 80) and plane.start == (2, 0, 0)
    assert plane.index == (2, slice(0, 96), slice(0, 80))
    assert not plane.covers((4, 96, 80))
    assert slice_region((4, 96, 80), 99).start[0] == 3
    assert slice_region((96, 80), None) == whole_region((96, 80))


def test_view_region_2d_plane_and_3d():
    corners = [[0, 10.2, 20.7], [0, 40.1, 60.4]]
    flat = view_region((96, 80), [c[1:] for c in corners])
    assert flat == Region((10, 21), (41, 61))
    plane = view_region((4, 96, 80), corners, z=1)
    assert plane.plane and plane.start == (1, 10, 21) and plane.stop == (2, 41, 61)
    assert plane.index == (1, slice(10, 41), slice(21, 61))
    box = view_region((4, 96, 80), corners, z=None)
    assert not box.plane and box.start == (0, 10, 21) and box.stop == (4, 41, 61)
    clipped = view_region((96, 80), [[-30, -30], [500, 500]])
    assert clipped == whole_region((96, 80))


def test_region_problem():
    assert region_problem(whole_region((4, 96, 80))) is None
    empty = view_region((96, 80), [[200, 200], [300, 300]])
    assert "empty" in region_problem(empty)
    small = Region((0, 0), (MIN_REGION_PX - 1, 50))
    assert "at least" in region_problem(small)
    assert region_problem(small, min_px=1) is None
    big = whole_region((100, 100, 100))
    assert "more than a dock reads" in region_problem(big, max_voxels=999_999)
    assert region_problem(big, max_voxels=10**6) is None


def _fake_view(shape, *, point, center, zoom, canvas=(100, 200), ndisplay=2, levels=1):
    """A duck-typed viewer and multiscale layer with scale (40, 4, 4), translate (0, 8, 16)."""
    scale, translate = np.array([40.0, 4.0, 4.0]), np.array([0.0, 8.0, 16.0])
    data = [np.zeros(tuple(n // 2**i for n in shape), np.uint8) for i in range(levels)]
    layer = SimpleNamespace(
        multiscale=levels > 1,
        data=data if levels > 1 else data[0],
        world_to_data=lambda world: (np.asarray(world) - translate) / scale,
    )
    viewer = SimpleNamespace(
        dims=SimpleNamespace(
            point=point,
            ndim=3,
            displayed=(1, 2) if ndisplay == 2 else (0, 1, 2),
            ndisplay=ndisplay,
        ),
        camera=SimpleNamespace(center=center, zoom=zoom),
        canvas=SimpleNamespace(size=canvas),
    )
    return viewer, layer


def test_scope_region_maps_the_view_to_level_0_voxels():
    # view: 100x200 canvas px at zoom 2 -> 50x100 nm around (y, x) = (208, 416) nm
    viewer, layer = _fake_view(
        (6, 400, 400), point=(80.0, 0, 0), center=(0, 208.0, 416.0), zoom=2.0, levels=3
    )
    region = scope_region(viewer, layer, "region in view")
    # data y: (183 - 8)/4 .. (233 - 8)/4 = 43.75 .. 56.25; x: (366 - 16)/4 .. (466 - 16)/4
    assert region.plane and region.start == (2, 44, 88) and region.stop == (3, 57, 113)
    assert scope_region(viewer, layer, "current slice") == slice_region((6, 400, 400), 2)
    assert scope_region(viewer, layer, "whole volume") == whole_region((6, 400, 400))
    viewer.dims.ndisplay, viewer.dims.displayed = 3, (0, 1, 2)
    box = scope_region(viewer, layer, "region in view")
    assert not box.plane and (box.start[0], box.stop[0]) == (0, 6)
    with pytest.raises(ValueError, match="unknown scope"):
        scope_region(viewer, layer, "everything")
    assert SCOPES[0] == "region in view"


def test_scope_region_needs_the_yx_plane():
    viewer, layer = _fake_view((6, 40, 40), point=(0.0, 0, 0), center=(0, 0, 0), zoom=1.0)
    viewer.dims.displayed = (0, 2)  # a z/x view
    with pytest.raises(ValueError, match="y/x plane"):
        scope_region(viewer, layer, "region in view")


def test_level0_and_read_region_read_only_the_box():
    array = np.arange(4 * 64 * 64, dtype=np.uint32).reshape(4, 64, 64)
    layer = SimpleNamespace(multiscale=True, data=[array, array[:, ::2, ::2]])
    assert level0(layer) is array
    assert level0(SimpleNamespace(multiscale=False, data=array)) is array
    reads = []

    def record(block, block_info=None):
        if block_info is not None:
            reads.append(tuple(block_info[0]["chunk-location"]))
        return block

    lazy = da.from_array(array, chunks=(1, 16, 16)).map_blocks(record, dtype=array.dtype)
    region = Region((2, 10, 20), (3, 30, 40), plane=True)
    out = read_region(lazy, region)
    assert isinstance(out, np.ndarray) and out.shape == (20, 20)
    np.testing.assert_array_equal(out, array[2, 10:30, 20:40])
    assert set(reads) == {(2, r, c) for r in (0, 1) for c in (1, 2)}
    assert read_region(array, whole_region(array.shape)) is array  # no copy
    assert describe_region(region, array.shape) == "20x20 px of section 2"
    assert describe_region(whole_region(array.shape), array.shape) == "all 4x64x64 px"
    assert describe_region(Region((0, 1, 2), (4, 9, 9)), array.shape) == "4x8x7 px at (0, 1, 2)"


def test_layer_voxel_size():
    assert layer_voxel_size((40, 4, 4), {}) == (40.0, 4.0, 4.0)
    assert layer_voxel_size((1, 1, 1), {"voxel_size_nm": [30, 5, 5]}) == (30.0, 5.0, 5.0)
    assert layer_voxel_size((1, 1, 1), {}) is None
    assert layer_voxel_size((1, 1), {"voxel_size_nm": (30, 5, 5)}) is None  # wrong length
    assert layer_voxel_size((1, 1), {"voxel_size_nm": "abc"}) is None


def test_parse_voxel_size():
    assert parse_voxel_size("40, 4, 4", 3) == (40.0, 4.0, 4.0)
    assert parse_voxel_size("4 4", 2) == (4.0, 4.0)
    with pytest.raises(ValueError, match="unknown"):
        parse_voxel_size("  ", 3)
    with pytest.raises(ValueError, match="numbers"):
        parse_voxel_size("a, b, c", 3)
    with pytest.raises(ValueError, match="3 values"):
        parse_voxel_size("4, 4", 3)
    with pytest.raises(ValueError, match="positive"):
        parse_voxel_size("40, 0, 4", 3)
