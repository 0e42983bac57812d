import numpy as np
import pytest

from napari_connectome._widgets._scope import (
    MIN_REGION_PX,
    Region,
    layer_voxel_size,
    parse_voxel_size,
    pixel_range,
    region_problem,
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
