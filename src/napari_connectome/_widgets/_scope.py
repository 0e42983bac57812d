"""Which part of an image layer the Segment dock works on: pure geometry, no Qt.

The dock turns its scope (whole volume, current slice, region in view) into a
:class:`Region` of the layer's data with the helpers here, then reads only
``data[region.index]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Smallest height / width (pixels) of a region worth segmenting.
MIN_REGION_PX = 16


@dataclass(frozen=True)
class Region:
    """A box of a layer's data (level 0), in pixels.

    Parameters
    ----------
    start : tuple of int
        First pixel of the box along each layer axis.
    stop : tuple of int
        One past the last pixel along each layer axis.
    plane : bool
        True when the layer is 3D and the box is one section segmented as a
        2D image (then ``stop[0] == start[0] + 1``).
    """

    start: tuple
    stop: tuple
    plane: bool = False

    @property
    def shape(self) -> tuple:
        """Size of the box along each layer axis."""
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def index(self) -> tuple:
        """Index into the layer data; a plane region drops its z axis."""
        slices = tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))
        return (self.start[0], *slices[1:]) if self.plane else slices

    def covers(self, shape) -> bool:
        """Tell whether the box is the whole array of ``shape`` (and not a plane)."""
        return not self.plane and self.start == (0,) * len(shape) and self.stop == tuple(shape)


def whole_region(shape) -> Region:
    """Return the region of the whole array.

    Parameters
    ----------
    shape : tuple of int
        Layer data shape.

    Returns
    -------
    Region
        The box ``0 .. shape``.
    """
    shape = tuple(int(s) for s in shape)
    return Region((0,) * len(shape), shape)


def slice_region(shape, z: int | None) -> Region:
    """Return the section ``z`` of a 3D array, or the whole of a 2D one.

    Parameters
    ----------
    shape : tuple of int
        Layer data shape, 2D or 3D.
    z : int or None
        Section index (3D only); clipped to the data.

    Returns
    -------
    Region
        A plane region for 3D, the whole image for 2D.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return whole_region(shape)
    z = int(np.clip(z, 0, shape[0] - 1))
    return Region((z, 0, 0), (z + 1, *shape[1:]), plane=True)


def pixel_range(low: float, high: float, size: int) -> tuple[int, int]:
    """Return the pixels whose extent overlaps ``[low, high]`` (data coordinates), clipped.

    Pixel ``i`` covers ``[i - 0.5, i + 0.5]`` (napari's convention).

    Parameters
    ----------
    low, high : float
        Interval in data coordinates.
    size : int
        Length of the axis.

    Returns
    -------
    tuple of int
        ``(start, stop)`` with ``0 <= start <= stop <= size``.
    """
    start = math.floor(low + 0.5)
    stop = math.ceil(high + 0.5)
    start = min(max(start, 0), size)
    return start, min(max(stop, start), size)


def view_box(center, zoom: float, canvas_size, rotated: bool = False) -> np.ndarray:
    """Return the world box of the two last displayed axes that the canvas shows.

    Parameters
    ----------
    center : sequence of float
        ``viewer.camera.center``; its last two values are the displayed
        vertical and horizontal axes.
    zoom : float
        ``viewer.camera.zoom``: canvas pixels per world unit.
    canvas_size : tuple of int
        ``viewer.canvas.size``: ``(height, width)`` in canvas pixels.
    rotated : bool
        A rotated (3D) camera: use the circle around the canvas, so the box
        holds the view whatever the rotation about the view axis.

    Returns
    -------
    numpy.ndarray
        ``[[low_v, low_h], [high_v, high_h]]`` in world units.
    """
    middle = np.asarray(center, dtype=float)[-2:]
    size = np.asarray(canvas_size, dtype=float)[:2]
    half = size / (2.0 * zoom)
    if rotated:
        half = np.full(2, np.hypot(*size) / (2.0 * zoom))
    return np.stack([middle - half, middle + half])


def view_region(shape, corners, z: int | None = None) -> Region:
    """Return the box of a layer's data that holds the view's corners.

    Parameters
    ----------
    shape : tuple of int
        Layer data shape, 2D or 3D.
    corners : array-like, shape (n, ndim)
        The view's corners in the layer's data coordinates; only the y and x
        (last two) columns are used.
    z : int or None
        For a 3D layer seen in 2D: the current section (a plane region). None
        for a 3D layer seen in 3D: all sections.

    Returns
    -------
    Region
        The box, clipped to the data (possibly empty).
    """
    shape = tuple(int(s) for s in shape)
    corners = np.asarray(corners, dtype=float).reshape(-1, len(shape))
    yx = [pixel_range(corners[:, a].min(), corners[:, a].max(), shape[a]) for a in (-2, -1)]
    start, stop = tuple(r[0] for r in yx), tuple(r[1] for r in yx)
    if len(shape) == 2:
        return Region(start, stop)
    if z is None:
        return Region((0, *start), (shape[0], *stop))
    base = slice_region(shape, z)
    return Region((base.start[0], *start), (base.stop[0], *stop), plane=True)


def region_problem(region: Region) -> str | None:
    """Say why a region cannot be segmented (empty or too small), or None.

    Parameters
    ----------
    region : Region
        The region.

    Returns
    -------
    str or None
        A message for the user, None when the region is fine.
    """
    height, width = region.shape[-2:]
    if min(region.shape) <= 0:
        return "the region in view is empty: the image is out of view; zoom out or pan to it"
    if height < MIN_REGION_PX or width < MIN_REGION_PX:
        return (
            f"the region is only {height}x{width} px (at least {MIN_REGION_PX}x{MIN_REGION_PX} "
            "needed); zoom out or pick another scope"
        )
    return None


def layer_voxel_size(scale, metadata) -> tuple[float, ...] | None:
    """Return a layer's voxel size in nm: its scale, or ``metadata["voxel_size_nm"]``.

    The scale counts only when it is not all ones (napari's default).

    Parameters
    ----------
    scale : sequence of float
        ``layer.scale``; all ones means "not set".
    metadata : dict
        ``layer.metadata``.

    Returns
    -------
    tuple of float or None
        The voxel size, None when unknown.
    """
    scale = tuple(float(s) for s in scale)
    if not all(s == 1.0 for s in scale):
        return scale
    value = (metadata or {}).get("voxel_size_nm")
    if value is None:
        return None
    try:
        value = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return value if len(value) == len(scale) else None


def parse_voxel_size(text: str, ndim: int) -> tuple[float, ...]:
    """Parse ``"40, 4, 4"`` into a voxel size in nm.

    Parameters
    ----------
    text : str
        Numbers separated by commas or spaces.
    ndim : int
        How many values are needed (the layer's dimensions).

    Returns
    -------
    tuple of float
        The voxel size.

    Raises
    ------
    ValueError
        When the text is empty, not numbers, of the wrong length or not positive.
    """
    axes = "z, y, x" if ndim == 3 else "y, x"
    parts = text.replace(",", " ").split()
    if not parts:
        raise ValueError(f"the voxel size is unknown: enter it in nm ({axes}), e.g. '40, 4, 4'")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"the voxel size must be numbers in nm ({axes}); got '{text}'") from None
    if len(values) != ndim:
        raise ValueError(f"the voxel size needs {ndim} values in nm ({axes}); got '{text}'")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"voxel sizes must be positive numbers (nm); got '{text}'")
    return values
