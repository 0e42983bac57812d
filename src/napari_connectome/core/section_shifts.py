"""In-plane shifts of sections: phase correlation and integer shifts into an aligned canvas.

Used by :mod:`napari_connectome.core.sections`. The correlation is the phase
correlation of Hann-windowed sections, band-limited by a Gaussian (so that
membranes, not pixel noise, decide), with planes larger than
:data:`MAX_CORRELATION_SIZE` binned down first. Its confidence is the height
of the correlation peak over the next-best peak away from it.

Shift convention: a section with shift ``(dy, dx)`` has the content of its
pixel ``(y, x)`` at ``(y + dy, x + dx)`` in the aligned frame.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["apply_shifts", "canvas_geometry", "phase_correlation", "undo_shifts"]

#: Longest plane edge (pixels) correlated; larger planes are binned down first.
MAX_CORRELATION_SIZE = 1024


def _check_stack(volume) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in np.shape(volume))
    if len(shape) != 3:
        raise ValueError(f"expected a 3D stack of sections (z, y, x); got shape {shape}")
    if min(shape) == 0:
        raise ValueError(f"the stack is empty (shape {shape})")
    return shape


def _bin(plane: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``factor`` x ``factor`` pixels, as ``float64`` (the plane when 1)."""
    plane = np.asarray(plane)
    if factor <= 1:
        return plane.astype(np.float64, copy=False)
    h, w = (plane.shape[0] // factor) * factor, (plane.shape[1] // factor) * factor
    blocks = plane[:h, :w].reshape(h // factor, factor, w // factor, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float64)


class _Spectra:
    """Band-limited, Hann-windowed spectra of sections for phase correlation."""

    def __init__(self, shape: tuple, smooth: float, max_size: int):
        if smooth < 0:
            raise ValueError(f"smooth must be >= 0; got {smooth}")
        self.factor = max(1, math.ceil(max(shape) / max_size))
        self.shape = (shape[0] // self.factor, shape[1] // self.factor)
        if min(self.shape) < 8:
            raise ValueError(f"sections of shape {shape} are too small to align (need 8 px)")
        self.window = np.outer(np.hanning(self.shape[0]), np.hanning(self.shape[1]))
        self.sigma = smooth / self.factor
        fy = np.fft.fftfreq(self.shape[0])[:, None]
        fx = np.fft.rfftfreq(self.shape[1])[None, :]
        self.lowpass = np.exp(-2.0 * (np.pi * self.sigma) ** 2 * (fy**2 + fx**2))

    def binned(self, plane: np.ndarray) -> np.ndarray:
        """Return the plane as ``float64``, binned by ``factor`` (block means)."""
        return _bin(plane, self.factor)

    def spectrum(self, plane: np.ndarray, binned: bool = False) -> np.ndarray:
        small = plane if binned else self.binned(plane)
        return np.fft.rfft2((small - small.mean()) * self.window)

    def correlate(self, ref: np.ndarray, mov: np.ndarray, subpixel: bool) -> tuple:
        cross = ref * np.conj(mov)
        magnitude = np.abs(cross)
        scale = magnitude.max()
        if scale == 0:
            return np.zeros(2), 0.0
        cross = cross / (magnitude + 1e-12 * scale) * self.lowpass
        surface = np.fft.irfft2(cross, s=self.shape)
        peak = np.unravel_index(int(np.argmax(surface)), surface.shape)
        shift = np.array(
            [p if p < n // 2 else p - n for p, n in zip(peak, surface.shape, strict=True)],
            dtype=np.float64,
        )
        if subpixel:
            for axis in range(2):
                n = surface.shape[axis]
                idx = list(peak)
                idx[axis] = (peak[axis] - 1) % n
                left = surface[tuple(idx)]
                idx[axis] = (peak[axis] + 1) % n
                right = surface[tuple(idx)]
                denom = left - 2 * surface[peak] + right
                if denom < 0:
                    shift[axis] += 0.5 * (left - right) / denom
        # confidence: the peak against the best peak away from it
        radius = 3.0 * self.sigma + 3.0
        dy = np.abs(np.arange(self.shape[0]) - peak[0])
        dx = np.abs(np.arange(self.shape[1]) - peak[1])
        dy = np.minimum(dy, self.shape[0] - dy)[:, None]
        dx = np.minimum(dx, self.shape[1] - dx)[None, :]
        far = surface[(dy**2 + dx**2) > radius**2]
        top = float(surface[peak])
        second = float(far.max()) if far.size else 0.0
        confidence = top / second if second > 0 else (math.inf if top > 0 else 0.0)
        return shift * self.factor, confidence


def phase_correlation(
    reference,
    moving,
    *,
    smooth: float = 4.0,
    subpixel: bool = False,
    max_size: int = MAX_CORRELATION_SIZE,
) -> tuple[np.ndarray, float]:
    """Estimate the in-plane translation between two sections.

    Parameters
    ----------
    reference, moving : array-like
        Two 2D sections of the same shape.
    smooth : float, optional
        Gaussian sigma (pixels) of the band limit: structures finer than this
        (pixel noise) do not vote.
    subpixel : bool, optional
        Refine the peak with a parabola per axis.
    max_size : int, optional
        Longest edge correlated; larger sections are binned down first.

    Returns
    -------
    shift : numpy.ndarray
        ``(dy, dx)`` such that ``moving[y, x]`` shows what ``reference`` shows
        at ``(y + dy, x + dx)``: moving ``moving`` by ``shift`` aligns it.
    confidence : float
        Height of the correlation peak over the next-best peak (about 1 for
        unrelated sections; consecutive EM sections give 1.5-7).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> ref = ndimage.gaussian_filter(np.random.default_rng(0).random((128, 128)), 2)
    >>> shift, confidence = phase_correlation(ref, np.roll(ref, (5, -3), axis=(0, 1)))
    >>> shift.tolist(), confidence > 1.5
    ([-5.0, 3.0], True)
    """
    ref, mov = np.asarray(reference), np.asarray(moving)
    if ref.ndim != 2 or ref.shape != mov.shape:
        raise ValueError(
            f"expected two 2D sections of the same shape; got {ref.shape} and {mov.shape}"
        )
    spectra = _Spectra(ref.shape, smooth, max_size)
    return spectra.correlate(spectra.spectrum(ref), spectra.spectrum(mov), subpixel)


def canvas_geometry(shifts, plane_shape: Sequence[int]) -> tuple[tuple[int, int], np.ndarray]:
    """Size of the aligned canvas and where each section's origin lands in it.

    Parameters
    ----------
    shifts : array-like
        ``(z, 2)`` integer shifts.
    plane_shape : sequence of int
        ``(y, x)`` shape of a section.

    Returns
    -------
    canvas_shape : tuple of int
        ``(y, x)`` shape that holds every shifted section whole.
    origins : numpy.ndarray
        ``(z, 2)`` ``int64`` position of each section's pixel ``(0, 0)``.
    """
    shifts = _integer_shifts(shifts)
    low = shifts.min(axis=0) if len(shifts) else np.zeros(2, np.int64)
    high = shifts.max(axis=0) if len(shifts) else np.zeros(2, np.int64)
    canvas = (int(plane_shape[0] + high[0] - low[0]), int(plane_shape[1] + high[1] - low[1]))
    return canvas, shifts - low


def _integer_shifts(shifts) -> np.ndarray:
    shifts = np.asarray(shifts)
    if shifts.ndim != 2 or shifts.shape[1] != 2:
        raise ValueError(f"shifts must have shape (z, 2); got {shifts.shape}")
    if shifts.dtype.kind == "f":
        if not np.isfinite(shifts).all() or np.any(shifts != np.rint(shifts)):
            raise ValueError("apply_shifts / undo_shifts need integer shifts; round them first")
    return shifts.astype(np.int64)


def apply_shifts(volume, shifts, *, fill=0) -> np.ndarray:
    """Move each section by its integer shift into a canvas that keeps it whole.

    Parameters
    ----------
    volume : array-like
        ``(z, y, x)`` stack (any dtype; labels stay exact).
    shifts : array-like
        ``(z, 2)`` integer shifts ``(dy, dx)``.
    fill : scalar, optional
        Value of the canvas outside each section.

    Returns
    -------
    numpy.ndarray
        ``(z, Y, X)`` aligned stack, ``Y >= y`` and ``X >= x``
        (see :func:`canvas_geometry`); :func:`undo_shifts` gives ``volume`` back.
    """
    nz, h, w = _check_stack(volume)
    shifts = _integer_shifts(shifts)
    if len(shifts) != nz:
        raise ValueError(f"got {len(shifts)} shifts for {nz} sections")
    canvas, origins = canvas_geometry(shifts, (h, w))
    dtype = np.asarray(volume[:1]).dtype
    out = np.full((nz, *canvas), fill, dtype=dtype)
    for z, (oy, ox) in enumerate(origins):
        out[z, oy : oy + h, ox : ox + w] = volume[z]
    return out


def undo_shifts(aligned, shifts, plane_shape: Sequence[int]) -> np.ndarray:
    """Cut each section back out of an aligned canvas (inverse of :func:`apply_shifts`).

    Parameters
    ----------
    aligned : numpy.ndarray
        ``(z, Y, X)`` canvas from :func:`apply_shifts` (or computed on it).
    shifts : array-like
        The ``(z, 2)`` integer shifts used.
    plane_shape : sequence of int
        ``(y, x)`` shape of the original sections.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` stack on the original grid.
    """
    shifts = _integer_shifts(shifts)
    h, w = int(plane_shape[0]), int(plane_shape[1])
    canvas, origins = canvas_geometry(shifts, (h, w))
    aligned = np.asarray(aligned)
    if aligned.ndim != 3 or aligned.shape[0] != len(shifts) or aligned.shape[1:] != canvas:
        raise ValueError(
            f"aligned stack of shape {aligned.shape} does not match {len(shifts)} sections "
            f"of {(h, w)} on a canvas of {canvas}"
        )
    out = np.empty((len(shifts), h, w), dtype=aligned.dtype)
    for z, (oy, ox) in enumerate(origins):
        out[z] = aligned[z, oy : oy + h, ox : ox + w]
    return out
