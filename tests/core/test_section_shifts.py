import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_connectome.core.section_shifts import (
    apply_shifts,
    canvas_geometry,
    phase_correlation,
    undo_shifts,
)


def texture(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), sigma)


@pytest.mark.parametrize("true_shift", [(0, 0), (7, -3), (-20, 40), (33, 0)])
def test_phase_correlation_recovers_a_known_shift(true_shift):
    big = texture((300, 300))
    ref = big[50:250, 50:250]
    dy, dx = true_shift
    # moving[y, x] = big[y + 50 - dy, x + 50 - dx]: shows what ref shows at (y - dy, x - dx)
    moving = big[50 - dy : 250 - dy, 50 - dx : 250 - dx]
    shift, confidence = phase_correlation(ref, moving, smooth=2.0)
    np.testing.assert_array_equal(shift, [-dy, -dx])
    assert confidence > 2.0


def test_phase_correlation_subpixel_and_binning():
    big = texture((1400, 1400), sigma=4.0)
    ref = ndi.shift(big, (0, 0))[100:1300, 100:1300]  # 1200 px: binned by 2
    moving = ndi.shift(big, (3.5, -6.0), order=3)[100:1300, 100:1300]
    shift, confidence = phase_correlation(ref, moving, smooth=4.0, subpixel=True)
    np.testing.assert_allclose(shift, [-3.5, 6.0], atol=1.0)
    assert confidence > 2.0


def test_unrelated_sections_have_low_confidence():
    _, confidence = phase_correlation(texture((200, 200), 1), texture((200, 200), 2), smooth=2.0)
    assert confidence < 1.5


def test_phase_correlation_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        phase_correlation(np.zeros((10, 10)), np.zeros((10, 12)))
    with pytest.raises(ValueError, match="too small"):
        phase_correlation(np.ones((4, 4)), np.ones((4, 4)))


def test_apply_then_undo_is_exact_for_labels():
    rng = np.random.default_rng(1)
    labels = rng.integers(1, 2**40, size=(4, 30, 40), dtype=np.uint64)
    shifts = np.array([[0, 0], [5, -3], [-7, 2], [0, 11]])
    aligned = apply_shifts(labels, shifts, fill=0)
    (cy, cx), origins = canvas_geometry(shifts, (30, 40))
    assert aligned.shape == (4, 30 + 12, 40 + 14) == (4, cy, cx)
    assert aligned.dtype == labels.dtype
    np.testing.assert_array_equal(undo_shifts(aligned, shifts, (30, 40)), labels)
    # each section sits at its origin; the rest is the fill value
    for z, (oy, ox) in enumerate(origins):
        np.testing.assert_array_equal(aligned[z, oy : oy + 30, ox : ox + 40], labels[z])
        assert np.count_nonzero(aligned[z]) == labels[z].size


def test_apply_shifts_moves_content_by_the_shift():
    stack = np.zeros((2, 20, 20), np.uint8)
    stack[0, 5, 5] = stack[1, 5, 5] = 1
    aligned = apply_shifts(stack, [[0, 0], [3, -2]])
    p0 = np.argwhere(aligned[0])[0]
    p1 = np.argwhere(aligned[1])[0]
    np.testing.assert_array_equal(p1 - p0, [3, -2])


def test_shift_errors_are_clear():
    stack = np.zeros((2, 8, 8))
    with pytest.raises(ValueError, match="integer shifts"):
        apply_shifts(stack, [[0.5, 0], [0, 0]])
    with pytest.raises(ValueError, match="2 sections"):
        apply_shifts(stack, [[0, 0]])
    with pytest.raises(ValueError, match="shape"):
        apply_shifts(stack, [0, 0])
    with pytest.raises(ValueError, match="does not match"):
        undo_shifts(np.zeros((2, 8, 8)), [[0, 0], [1, 0]], (8, 8))
