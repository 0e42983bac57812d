"""Mode downsampling of labels, checked window by window."""

import numpy as np
import pytest

from napari_connectome.io.label_pyramid import mode_downsample, pyramid_factors


def _mode_reference(block, factors):
    """One window at a time: most frequent label, a label before 0, then the first met."""
    pad = [(0, (-n) % f) for n, f in zip(block.shape, factors, strict=True)]
    block = np.pad(block, pad, mode="edge")
    out_shape = tuple(n // f for n, f in zip(block.shape, factors, strict=True))
    out = np.zeros(out_shape, dtype=block.dtype)
    for index in np.ndindex(out_shape):
        window = block[
            tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))
        ].reshape(-1)
        score = [2 * np.count_nonzero(window == v) - (v == 0) for v in window]
        out[index] = window[int(np.argmax(score))]
    return out


@pytest.mark.parametrize("factors", [(1, 2, 2), (2, 2, 2), (1, 3, 2), (2, 1, 1)])
def test_mode_downsample_matches_a_window_by_window_reference(factors):
    rng = np.random.default_rng(sum(factors))
    for dtype in (np.uint32, np.uint64, np.int32):
        block = rng.integers(0, 4, (5, 7, 9)).astype(dtype)  # many ties, uneven sizes
        np.testing.assert_array_equal(
            mode_downsample(block, factors), _mode_reference(block, factors)
        )
    np.testing.assert_array_equal(
        mode_downsample(block[0], factors[1:]), _mode_reference(block[0], factors[1:])
    )


def test_pyramid_stops_at_the_largest_size():
    assert pyramid_factors((10, 300, 200), (40.0, 4.0, 4.0), max_size=256) == [(1, 2, 2)]
    assert pyramid_factors((10, 200, 200), (40.0, 4.0, 4.0), max_size=256) == []
