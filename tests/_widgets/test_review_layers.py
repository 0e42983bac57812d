import numpy as np
import pytest

from napari_connectome._widgets._review_layers import BoxVolume, in_plane_outline


def test_box_volume_reads_like_the_dense_volume():
    rng = np.random.default_rng(0)
    volume = BoxVolume((6, 20, 30), np.uint32)
    assert volume.ndim == 3 and volume.size == 6 * 20 * 30 and len(volume) == 6
    assert not volume[2].any() and volume[2].shape == (20, 30)  # nothing set yet
    box = (slice(1, 4), slice(5, 12), slice(10, 25))
    values = rng.integers(1, 9, (3, 7, 15)).astype(np.uint32)
    volume.set(box, values)
    dense = np.zeros(volume.shape, np.uint32)
    dense[box] = values
    for key in (
        2,
        (0,),
        (slice(None), 6),
        (3, slice(0, 20, 2), slice(None)),
        (Ellipsis, 11),
        (slice(2, 5), slice(8, 18), slice(20, 30)),
        (-3, -10, -8),
        Ellipsis,
    ):
        np.testing.assert_array_equal(volume[key], dense[key], err_msg=str(key))
    np.testing.assert_array_equal(np.asarray(volume), dense)
    with pytest.raises(ValueError, match="do not fill the box"):
        volume.set(box, values[:, :3])
    with pytest.raises(IndexError):
        volume[7]
    volume.clear()
    assert not np.asarray(volume).any()


def test_in_plane_outline_keeps_only_borders():
    labels = np.zeros((2, 8, 8), np.uint32)
    labels[:, 2:6, 2:6] = 5
    outline = in_plane_outline(labels)
    assert set(np.unique(outline)) == {0, 5}
    assert outline[0, 2, 3] == 5 and outline[0, 4, 4] == 0  # border kept, inside cleared
    assert outline[1].sum() == outline[0].sum()  # per section, not across z
    np.testing.assert_array_equal(outline > 0, (labels > 0) & (outline > 0))
