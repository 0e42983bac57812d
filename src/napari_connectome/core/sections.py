"""Missing and misaligned sections of serial-section (anisotropic) EM stacks.

The boundary model works on one 2D section at a time, so a section that is
shifted in-plane against its neighbours is predicted fine but linked to the
wrong objects above and below it, and a blank (missing) section gets no
boundaries and cuts every object in z. This module finds both problems:

- :func:`detect_missing_sections`: sections that are blank, constant or of far
  lower contrast than the others (contrast = standard deviation of the section
  after a light Gaussian smoothing, so pixel noise alone does not count);
- :func:`phase_correlation` and :func:`estimate_section_shifts`: the in-plane
  translation of each section against the previous good one (phase correlation
  of the Hann-windowed sections, band-limited by a Gaussian so that membranes,
  not pixel noise, decide), accumulated into one displacement per section.
  Only shifts clearly above noise are kept: a pair whose correlation peak is
  not clearly above the next-best peak, or whose shift is below ``min_shift``
  pixels, counts as aligned;

and gives the tools to use the answer: :func:`apply_shifts` /
:func:`undo_shifts` (integer shifts into and out of an aligned canvas large
enough to keep every section whole; with :func:`phase_correlation` they live
in :mod:`napari_connectome.core.section_shifts` and are re-exported here) and
:func:`fill_missing_sections` (a missing section's boundary map from its
aligned neighbours).

Shift convention: a section with shift ``(dy, dx)`` has the content of its
pixel ``(y, x)`` at ``(y + dy, x + dx)`` in the aligned frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .section_shifts import (
    MAX_CORRELATION_SIZE,
    _bin,
    _check_stack,
    _integer_shifts,
    _Spectra,
    apply_shifts,
    canvas_geometry,
    phase_correlation,
    undo_shifts,
)

__all__ = [
    "SectionAlignment",
    "analyse_sections",
    "apply_shifts",
    "canvas_geometry",
    "detect_missing_sections",
    "estimate_section_shifts",
    "fill_missing_sections",
    "phase_correlation",
    "section_contrast",
    "undo_shifts",
]

#: Sections below this fraction of the median section contrast count as missing.
MIN_RELATIVE_CONTRAST = 0.25
#: Smallest shift (pixels, Euclidean) that is corrected.
MIN_SHIFT = 2.0
#: Smallest ratio of the correlation peak to the next-best peak for a trusted shift.
MIN_CONFIDENCE = 1.5


@dataclass
class SectionAlignment:
    """What :func:`analyse_sections` found in a stack.

    Parameters
    ----------
    shifts : numpy.ndarray
        ``(z, 2)`` ``int64`` shift ``(dy, dx)`` of each section into the aligned
        frame (lower-median shift 0: most sections stay where they are).
    missing : numpy.ndarray
        Indices of the missing sections (sorted ``int64``).
    contrast : numpy.ndarray
        ``(z,)`` contrast of each section relative to the median section.
    confidence : numpy.ndarray
        ``(z,)`` correlation peak ratio of each section against the previous
        good one (NaN for the first good section and for missing ones).
    plane_shape : tuple of int
        ``(y, x)`` shape of a section.
    """

    shifts: np.ndarray
    missing: np.ndarray
    contrast: np.ndarray
    confidence: np.ndarray
    plane_shape: tuple

    @property
    def shifted(self) -> bool:
        """bool: Whether any section is shifted."""
        return bool(np.any(self.shifts))

    @property
    def needs_correction(self) -> bool:
        """bool: Whether any section is shifted or missing."""
        return self.shifted or self.missing.size > 0

    def to_dict(self) -> dict:
        """Return a JSON-ready summary (missing sections, shifts, shifted sections).

        Returns
        -------
        dict
            ``missing`` (list of int), ``shifts`` (list of ``[dy, dx]``, one per
            section), ``shifted`` (indices of sections with a non-zero shift).
        """
        return {
            "missing": [int(z) for z in self.missing],
            "shifts": [[int(dy), int(dx)] for dy, dx in self.shifts],
            "shifted": [int(z) for z in np.flatnonzero(np.any(self.shifts != 0, axis=1))],
        }


def _read_plane(volume, z: int) -> np.ndarray:
    plane = np.asarray(volume[z])
    if plane.dtype.kind not in "biuf":
        raise ValueError(f"expected a numeric stack; got dtype {plane.dtype}")
    if plane.dtype.kind == "f" and not np.isfinite(plane).all():
        raise ValueError(
            f"section {z} contains NaN or infinite values; replace them (for example "
            "with 0) first: a blank section is then detected as missing and bridged"
        )
    return plane


def _contrast(plane: np.ndarray, smooth: float) -> float:
    if plane.max() == plane.min():
        return 0.0
    return float(ndi.gaussian_filter(plane, smooth).std()) if smooth > 0 else float(plane.std())


def section_contrast(
    volume, *, smooth: float = 2.0, max_size: int = MAX_CORRELATION_SIZE
) -> np.ndarray:
    """Contrast of each section: standard deviation after Gaussian smoothing.

    Parameters
    ----------
    volume : array-like
        ``(z, y, x)`` stack (numpy, zarr, dask...; read one section at a time).
    smooth : float, optional
        Gaussian sigma in pixels applied first, so pixel noise alone is not
        contrast; 0 disables it.
    max_size : int, optional
        Sections with a longer edge are binned down (block means) first.

    Returns
    -------
    numpy.ndarray
        ``(z,)`` ``float64`` contrast (0 for a constant section).

    Raises
    ------
    ValueError
        If the stack is not 3D or a section holds NaN or infinite values.
    """
    nz, h, w = _check_stack(volume)
    factor = max(1, -(-max(h, w) // int(max_size)))
    return np.array([_contrast(_bin(_read_plane(volume, z), factor), smooth) for z in range(nz)])


def _missing_from_contrast(contrast: np.ndarray, min_relative_contrast: float) -> np.ndarray:
    if not 0.0 <= min_relative_contrast < 1.0:
        raise ValueError(f"min_relative_contrast must be in [0, 1); got {min_relative_contrast}")
    contrast = np.asarray(contrast, dtype=np.float64)
    good = contrast[contrast > 0]
    reference = float(np.median(good)) if good.size else 0.0
    missing = (contrast <= 0) | (contrast < min_relative_contrast * reference)
    return np.flatnonzero(missing).astype(np.int64)


def detect_missing_sections(
    volume,
    *,
    min_relative_contrast: float = MIN_RELATIVE_CONTRAST,
    smooth: float = 2.0,
    max_size: int = MAX_CORRELATION_SIZE,
) -> np.ndarray:
    """Find blank, constant or very low-contrast sections.

    Parameters
    ----------
    volume : array-like
        ``(z, y, x)`` stack.
    min_relative_contrast : float, optional
        A section whose contrast (see :func:`section_contrast`) is below this
        fraction of the median contrast of the non-constant sections is missing;
        constant sections always are.
    smooth : float, optional
        Gaussian sigma (pixels) of the contrast measure.
    max_size : int, optional
        Sections with a longer edge are binned down first.

    Returns
    -------
    numpy.ndarray
        Sorted ``int64`` indices of the missing sections.

    Raises
    ------
    ValueError
        On a stack that is not 3D, NaN / infinite values or a bad parameter.

    Examples
    --------
    >>> import numpy as np
    >>> stack = np.random.default_rng(0).random((4, 32, 32))
    >>> stack[2] = 0
    >>> detect_missing_sections(stack).tolist()
    [2]
    """
    if not 0.0 <= min_relative_contrast < 1.0:
        raise ValueError(f"min_relative_contrast must be in [0, 1); got {min_relative_contrast}")
    contrast = section_contrast(volume, smooth=smooth, max_size=max_size)
    return _missing_from_contrast(contrast, min_relative_contrast)


def _accept(shift: np.ndarray, confidence: float, min_shift: float, min_confidence: float):
    if confidence < min_confidence or float(np.hypot(*shift)) < min_shift:
        return np.zeros(2)
    return shift


def _check_shift_options(min_shift: float, min_confidence: float) -> None:
    if not (np.isfinite(min_shift) and min_shift >= 0):
        raise ValueError(f"min_shift must be >= 0; got {min_shift}")
    if not (np.isfinite(min_confidence) and min_confidence >= 1):
        raise ValueError(f"min_confidence must be >= 1; got {min_confidence}")


def _centre(shifts: np.ndarray, missing: np.ndarray, subpixel: bool) -> np.ndarray:
    good = np.setdiff1d(np.arange(len(shifts)), missing)
    if good.size:  # the lower median: one section's own shift, so it stays exactly in place
        shifts = shifts - np.sort(shifts[good], axis=0)[(good.size - 1) // 2]
    return shifts if subpixel else np.rint(shifts).astype(np.int64)


def estimate_section_shifts(
    volume,
    *,
    missing: Sequence[int] = (),
    smooth: float = 4.0,
    min_shift: float = MIN_SHIFT,
    min_confidence: float = MIN_CONFIDENCE,
    subpixel: bool = False,
    max_size: int = MAX_CORRELATION_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate each section's in-plane shift into a common aligned frame.

    Each good section is correlated with the previous good one; the pairwise
    shifts (those clearly above noise, see ``min_shift`` and ``min_confidence``)
    are summed along the stack, and the (lower) median shift is subtracted so that most
    sections stay in place. Missing sections take the shift of the previous
    good section (the first good one at the start of the stack).

    Parameters
    ----------
    volume : array-like
        ``(z, y, x)`` stack; read one section at a time.
    missing : sequence of int, optional
        Sections to skip (see :func:`detect_missing_sections`).
    smooth : float, optional
        Band limit of the correlation, Gaussian sigma in pixels.
    min_shift : float, optional
        Pairwise shifts shorter than this (pixels) are treated as 0.
    min_confidence : float, optional
        Pairwise shifts whose correlation peak is less than this many times the
        next-best peak are treated as 0.
    subpixel : bool, optional
        Keep sub-pixel shifts (float) instead of rounding to integers.
    max_size : int, optional
        Longest edge correlated; larger sections are binned down first.

    Returns
    -------
    shifts : numpy.ndarray
        ``(z, 2)`` shifts ``(dy, dx)``, ``int64`` (``float64`` with ``subpixel``).
    confidence : numpy.ndarray
        ``(z,)`` peak ratio against the previous good section (NaN where none).
    """
    nz, h, w = _check_stack(volume)
    _check_shift_options(min_shift, min_confidence)
    missing = np.unique(np.asarray(list(missing), dtype=np.int64))
    if missing.size and (missing.min() < 0 or missing.max() >= nz):
        raise ValueError(f"missing sections {missing.tolist()} are outside 0..{nz - 1}")
    spectra = _Spectra((h, w), smooth, max_size)
    pairs = np.zeros((nz, 2))
    confidence = np.full(nz, np.nan)
    previous = None
    for z in range(nz):
        if z in missing:
            continue
        current = spectra.spectrum(_read_plane(volume, z))
        if previous is not None:
            shift, confidence[z] = spectra.correlate(previous, current, subpixel)
            pairs[z] = _accept(shift, confidence[z], min_shift, min_confidence)
        previous = current
    return _centre(np.cumsum(pairs, axis=0), missing, subpixel), confidence


def analyse_sections(
    volume,
    *,
    min_relative_contrast: float = MIN_RELATIVE_CONTRAST,
    smooth: float = 4.0,
    min_shift: float = MIN_SHIFT,
    min_confidence: float = MIN_CONFIDENCE,
    max_size: int = MAX_CORRELATION_SIZE,
) -> SectionAlignment:
    """Find missing sections and integer in-plane shifts in one pass over a stack.

    Every section is read once (plus the two good sections around each run of
    missing ones, which are correlated with each other).

    Parameters
    ----------
    volume : array-like
        ``(z, y, x)`` stack (numpy, zarr, dask...).
    min_relative_contrast : float, optional
        See :func:`detect_missing_sections`.
    smooth : float, optional
        Band limit of the correlation (Gaussian sigma, pixels).
    min_shift, min_confidence : float, optional
        See :func:`estimate_section_shifts`.
    max_size : int, optional
        Longest edge correlated; larger sections are binned down first.

    Returns
    -------
    SectionAlignment
        Missing sections, integer shifts, contrasts and confidences.

    Raises
    ------
    ValueError
        On a stack that is not 3D, NaN / infinite values or a bad parameter.
    """
    nz, h, w = _check_stack(volume)
    _check_shift_options(min_shift, min_confidence)
    if not 0.0 <= min_relative_contrast < 1.0:
        raise ValueError(f"min_relative_contrast must be in [0, 1); got {min_relative_contrast}")
    spectra = _Spectra((h, w), smooth, max_size)
    contrast = np.zeros(nz)
    raw_pairs, raw_conf = np.zeros((nz, 2)), np.full(nz, np.nan)
    previous = None
    for z in range(nz):
        small = spectra.binned(_read_plane(volume, z))
        contrast[z] = _contrast(small, 2.0)
        current = spectra.spectrum(small, binned=True) if contrast[z] > 0 else None
        if previous is not None and current is not None:
            raw_pairs[z], raw_conf[z] = spectra.correlate(previous, current, False)
        previous = current
    missing = _missing_from_contrast(contrast, min_relative_contrast)
    is_missing = np.zeros(nz, bool)
    is_missing[missing] = True
    pairs, confidence = np.zeros((nz, 2)), np.full(nz, np.nan)
    last_good = None
    for z in range(nz):
        if is_missing[z]:
            continue
        if last_good is not None:
            if last_good == z - 1:
                shift, confidence[z] = raw_pairs[z], raw_conf[z]
            else:  # bridge a run of missing sections: correlate the good ends
                shift, confidence[z] = phase_correlation(
                    _read_plane(volume, last_good),
                    _read_plane(volume, z),
                    smooth=smooth,
                    max_size=max_size,
                )
            pairs[z] = _accept(shift, confidence[z], min_shift, min_confidence)
        last_good = z
    shifts = np.cumsum(pairs, axis=0)
    good = np.flatnonzero(~is_missing)
    if good.size:  # missing sections before the first good one take its shift
        shifts[: good[0]] = shifts[good[0]]
    shifts = _centre(shifts, missing, False)
    median = np.median(contrast[contrast > 0]) if np.any(contrast > 0) else 1.0
    return SectionAlignment(
        shifts=shifts,
        missing=missing,
        contrast=contrast / median,
        confidence=confidence,
        plane_shape=(h, w),
    )


def fill_missing_sections(boundaries: np.ndarray, missing, shifts=None) -> np.ndarray:
    """Replace missing sections of a boundary map with their aligned neighbours (in place).

    Each missing section gets the larger boundary probability of the nearest
    good section below and above it, each moved into the missing section's
    frame (edge values continue past a section's border). Objects then continue
    through the gap: a membrane of either neighbour stays a membrane, so each
    fragment of the filled section lies inside one cell of each neighbour (the
    voxel-wise mean instead lets fragments cross a membrane of one neighbour,
    which doubled the false splits on a phantom).

    Parameters
    ----------
    boundaries : numpy.ndarray
        ``(z, y, x)`` boundary probabilities; modified in place.
    missing : sequence of int
        Indices of the missing sections.
    shifts : array-like, optional
        ``(z, 2)`` integer shifts of the sections (none when omitted).

    Returns
    -------
    numpy.ndarray
        ``boundaries``, filled.

    Raises
    ------
    ValueError
        If every section is missing, or on bad indices or shifts.
    """
    nz = _check_stack(boundaries)[0]
    missing = np.unique(np.asarray(list(missing), dtype=np.int64))
    if missing.size == 0:
        return boundaries
    if missing.min() < 0 or missing.max() >= nz:
        raise ValueError(f"missing sections {missing.tolist()} are outside 0..{nz - 1}")
    good = np.setdiff1d(np.arange(nz), missing)
    if good.size == 0:
        raise ValueError("every section is missing: nothing to fill them from")
    shifts = np.zeros((nz, 2), np.int64) if shifts is None else _integer_shifts(shifts)
    for z in missing:
        below, above = good[good < z], good[good > z]
        sources = ([int(below[-1])] if below.size else []) + (
            [int(above[0])] if above.size else []
        )
        fill = None
        for source in sources:
            offset = shifts[source] - shifts[z]  # this section's pixel p shows source p - offset
            moved = ndi.shift(boundaries[source], offset, order=0, mode="nearest")
            fill = moved if fill is None else np.maximum(fill, moved)
        boundaries[z] = fill
    return boundaries
