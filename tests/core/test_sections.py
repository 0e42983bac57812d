import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_connectome.core.sections import (
    SectionAlignment,
    analyse_sections,
    apply_shifts,
    detect_missing_sections,
    estimate_section_shifts,
    fill_missing_sections,
    section_contrast,
)


def stack_with_shift(nz=6, size=160, moved=None, seed=0):
    """Sections cut from one slowly changing texture; ``moved`` = {z: (dy, dx)} displaces cuts."""
    rng = np.random.default_rng(seed)
    big = ndi.gaussian_filter(rng.random((nz, size + 100, size + 100)), (1.5, 2, 2))
    out = np.empty((nz, size, size))
    for z in range(nz):
        dy, dx = (moved or {}).get(z, (0, 0))
        out[z] = big[z, 50 - dy : 50 - dy + size, 50 - dx : 50 - dx + size]
    out += rng.normal(0, 0.002, out.shape)
    return out


def test_detects_blank_constant_and_low_contrast_sections():
    stack = stack_with_shift(nz=8)
    stack[1] = 0.0  # black
    stack[4] = 0.7  # constant grey
    stack[6] = stack[6].mean() + 0.05 * (stack[6] - stack[6].mean())  # 5 % contrast
    assert detect_missing_sections(stack).tolist() == [1, 4, 6]
    contrast = section_contrast(stack)
    assert contrast[1] == contrast[4] == 0.0 and contrast[0] > 0


def test_noise_only_section_counts_as_missing_but_normal_variation_does_not():
    stack = stack_with_shift(nz=6)
    rng = np.random.default_rng(3)
    stack[2] = stack[2].mean() + rng.normal(0, stack[2].std(), stack[2].shape)  # no structure
    stack[4] = 0.6 * stack[4]  # fainter section, still tissue
    assert detect_missing_sections(stack).tolist() == [2]


def test_detection_rejects_nan_and_bad_input():
    stack = stack_with_shift(nz=3)
    stack[1, 5, 5] = np.nan
    with pytest.raises(ValueError, match="section 1 contains NaN"):
        detect_missing_sections(stack)
    with pytest.raises(ValueError, match="3D stack"):
        detect_missing_sections(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="min_relative_contrast"):
        detect_missing_sections(stack_with_shift(nz=3), min_relative_contrast=1.5)


def test_estimated_shifts_recover_a_known_shift_and_leave_the_rest_alone():
    stack = stack_with_shift(moved={3: (12, -20)})
    shifts, confidence = estimate_section_shifts(stack, smooth=2.0)
    assert shifts.dtype == np.int64
    expected = np.zeros((6, 2), np.int64)
    expected[3] = (-12, 20)  # moving section 3 by this puts it back
    np.testing.assert_array_equal(shifts, expected)
    assert np.isnan(confidence[0]) and np.all(confidence[1:] > 1.5)


def test_a_shifted_block_of_sections_moves_together():
    stack = stack_with_shift(nz=7, moved={z: (0, 25) for z in (4, 5, 6)})
    shifts, _ = estimate_section_shifts(stack, smooth=2.0)
    # the median section stays in place: the three moved sections are moved back
    np.testing.assert_array_equal(shifts[:, 1], [0, 0, 0, 0, -25, -25, -25])


def test_small_or_unconfident_shifts_are_not_corrected():
    stack = stack_with_shift(moved={2: (1, 0)})
    shifts, _ = estimate_section_shifts(stack, smooth=2.0, min_shift=2.0)
    assert not shifts.any()
    stack = stack_with_shift(moved={2: (10, 0)})
    shifts, _ = estimate_section_shifts(stack, smooth=2.0, min_confidence=1e9)
    assert not shifts.any()


def test_subpixel_shifts_are_float():
    stack = stack_with_shift(moved={2: (6, 0)})
    shifts, _ = estimate_section_shifts(stack, smooth=2.0, subpixel=True)
    assert shifts.dtype == np.float64
    np.testing.assert_allclose(shifts[2], [-6, 0], atol=0.5)


def test_analyse_sections_bridges_a_missing_section_when_estimating_shifts():
    stack = stack_with_shift(nz=8, moved={4: (0, 15), 5: (0, 15), 6: (0, 15)})
    stack[3] = 0.0  # missing, between an unmoved and the moved block
    found = analyse_sections(stack, smooth=2.0)
    assert isinstance(found, SectionAlignment)
    assert found.missing.tolist() == [3]
    # the missing section takes the shift of the previous good one; 4-6 move back
    np.testing.assert_array_equal(found.shifts[:, 1], [0, 0, 0, 0, -15, -15, -15, 0])
    assert not found.shifts[:, 0].any()
    assert found.needs_correction and found.shifted
    assert np.isnan(found.confidence[3]) and found.confidence[4] > 1.5
    summary = found.to_dict()
    assert summary["missing"] == [3] and summary["shifted"] == [4, 5, 6]
    assert summary["shifts"][4] == [0, -15]


def test_a_clean_stack_needs_no_correction():
    found = analyse_sections(stack_with_shift(), smooth=2.0)
    assert not found.needs_correction
    assert found.to_dict() == {"missing": [], "shifts": [[0, 0]] * 6, "shifted": []}


def test_the_median_section_stays_in_place():
    stack = stack_with_shift(nz=5, moved={z: (9, 0) for z in (2, 3, 4)})
    shifts, _ = estimate_section_shifts(stack, smooth=2.0)
    np.testing.assert_array_equal(shifts[:, 0], [9, 9, 0, 0, 0])


def test_fill_takes_the_larger_of_the_aligned_neighbours():
    boundaries = np.zeros((3, 20, 20), np.float32)
    boundaries[0, :, 5] = 1.0  # vertical membrane at x = 5 below
    boundaries[2, 8, :] = 0.8  # horizontal membrane at y = 8 above
    boundaries[1] = 0.3  # garbage in the missing section
    fill_missing_sections(boundaries, [1])
    assert boundaries[1, 0, 5] == 1.0 and boundaries[1, 8, 0] == pytest.approx(0.8)
    assert boundaries[1, 0, 0] == 0.0 and boundaries[1, 15, 15] == 0.0


def test_fill_moves_neighbours_into_the_missing_sections_frame():
    boundaries = np.zeros((3, 20, 20), np.float32)
    boundaries[0, :, 5] = 1.0
    # section 2 is shifted by +4 in x: the same membrane lies at x = 9 in its own pixels
    boundaries[2, :, 9] = 1.0
    shifts = np.array([[0, 0], [0, 0], [0, -4]])
    fill_missing_sections(boundaries, [1], shifts)
    assert np.flatnonzero(boundaries[1, 0]).tolist() == [5]
    # and the filled section lines up with both neighbours in the aligned frame
    aligned = apply_shifts(boundaries, shifts)
    np.testing.assert_array_equal(aligned[1], aligned[0])
    np.testing.assert_array_equal(aligned[1, :, 4:-4], aligned[2, :, 4:-4])


def test_fill_errors_and_edges():
    boundaries = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="every section is missing"):
        fill_missing_sections(boundaries.copy(), [0, 1, 2])
    with pytest.raises(ValueError, match="outside"):
        fill_missing_sections(boundaries.copy(), [5])
    edge = boundaries.copy()
    fill_missing_sections(edge, [0])  # first section: copy of the next good one
    np.testing.assert_array_equal(edge[0], boundaries[1])
    assert fill_missing_sections(boundaries, []) is boundaries


def test_large_uint8_sections_are_binned_and_still_aligned():
    rng = np.random.default_rng(5)
    big = ndi.gaussian_filter(rng.random((1400, 1400)), 4)
    big = ((big - big.min()) / np.ptp(big) * 255).astype(np.uint8)
    stack = np.stack([big[100:1300, 100:1300]] * 3 + [big[70:1270, 100:1300]])
    stack[1] = 0
    found = analyse_sections(stack, smooth=6.0)  # 1200 px: correlated binned by 2
    assert found.missing.tolist() == [1]
    # section 3 shows at y what the others show at y - 30: it moves back by -30
    np.testing.assert_array_equal(found.shifts[3] - found.shifts[2], [-30, 0])


def test_non_numeric_stacks_are_refused():
    with pytest.raises(ValueError, match="numeric"):
        section_contrast(np.array([[["a"] * 3] * 3] * 2))
