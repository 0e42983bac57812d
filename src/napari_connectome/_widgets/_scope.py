"""Which part of a layer a dock works on: geometry, and reading only that part. No Qt.

The Segment and Evaluate docks turn their scope (region in view, current
slice, whole volume) into a :class:`Region` of the layer's full-resolution
data with :func:`scope_region` (for a multiscale layer: level 0, whatever
level napari shows), then read only that box with :func:`read_region`, so a
lazy (zarr, OME-Zarr, dask) layer is never loaded whole. The viewer and layer
are used through their attributes only; nothing here imports napari.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

#: Smallest height / width (pixels) of a region worth segmenting.
MIN_REGION_PX = 16

#: The scopes a dock offers, the first being the default.
REGION_IN_VIEW, CURRENT_SLICE, WHOLE_VOLUME = "region in view", "current slice", "whole volume"
SCOPES = (REGION_IN_VIEW, CURRENT_SLICE, WHOLE_VOLUME)

#: Most voxels a dock reads into memory at once (about 2 GB of working memory per
#: byte of input for segmentation); bigger scopes are refused with a hint.
MAX_DOCK_VOXELS = 2**27


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


def region_problem(
    region: Region, min_px: int = MIN_REGION_PX, max_voxels: int | None = None
) -> str | None:
    """Say why a dock cannot work on a region (empty, too small, too big), or None.

    Parameters
    ----------
    region : Region
        The region.
    min_px : int
        Smallest height and width accepted (1: any non-empty region).
    max_voxels : int, optional
        Most voxels accepted; `MAX_DOCK_VOXELS` when not given.

    Returns
    -------
    str or None
        A message for the user, None when the region is fine.
    """
    height, width = region.shape[-2:]
    if min(region.shape) <= 0:
        return "the region in view is empty: the image is out of view; zoom out or pan to it"
    if height < min_px or width < min_px:
        return (
            f"the region is only {height}x{width} px (at least {min_px}x{min_px} "
            "needed); zoom out or pick another scope"
        )
    limit = MAX_DOCK_VOXELS if max_voxels is None else int(max_voxels)
    n = int(np.prod(region.shape, dtype=np.int64))
    if n > limit:
        size = "x".join(str(s) for s in region.shape)
        return (
            f"the scope is {size} voxels ({n / 1e6:,.0f} M), more than a dock reads into "
            f"memory ({limit / 1e6:,.0f} M); pick 'region in view' and zoom in, or use the "
            "command line for the whole volume (napari-connectome segment ... --blockwise)"
        )
    return None


def level0(layer):
    """Return a layer's full-resolution data: level 0 of a multiscale layer, else its data.

    Parameters
    ----------
    layer : napari.layers.Layer
        An image or labels layer.

    Returns
    -------
    array-like
        Not loaded: a numpy, zarr or dask array as the layer holds it.
    """
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def read_region(data, region: Region) -> np.ndarray:
    """Read one region of an array into memory, touching only the chunks it overlaps.

    Parameters
    ----------
    data : array-like
        Level-0 data: numpy, ``np.memmap``, zarr or dask (computed here).
    region : Region
        The box to read; a plane region drops its z axis.

    Returns
    -------
    numpy.ndarray
        The box's voxels (a view when ``data`` is a numpy array and the box is all of it).
    """
    part = data if region.covers(data.shape) else data[region.index]
    if hasattr(part, "compute"):
        part = part.compute()
    return np.asarray(part)


def scope_region(viewer, layer, scope: str) -> Region:
    """Return the box of a layer's full-resolution data that a dock's scope covers.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Gives the current point (``dims``), the camera and the canvas size.
    layer : napari.layers.Layer
        A 2D or 3D layer, single- or multiscale; world coordinates map to its
        level-0 voxels through ``layer.world_to_data``.
    scope : str
        One of `SCOPES`. ``"region in view"``: the canvas's visible box, in
        the current section when the view is 2D, through all sections when it
        is 3D; ``"current slice"``: the section shown (all of a 2D layer);
        ``"whole volume"``: all of it.

    Returns
    -------
    Region
        Clipped to the data (possibly empty, see `region_problem`).

    Raises
    ------
    ValueError
        When the scope is unknown, or the region in view is asked for while
        the y/x plane is not the displayed one.
    """
    shape = tuple(int(n) for n in level0(layer).shape)
    if scope == WHOLE_VOLUME:
        return whole_region(shape)
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; pick one of {', '.join(SCOPES)}")
    dims = viewer.dims
    point = np.asarray(dims.point, dtype=float)
    z = None
    if len(shape) == 3:
        z = int(np.round(layer.world_to_data(point)[0]))
    if scope == CURRENT_SLICE:
        return slice_region(shape, z)
    offset = dims.ndim - len(shape)
    displayed = [d for d in dims.displayed if d >= offset]
    if sorted(d - offset for d in displayed[-2:]) != [len(shape) - 2, len(shape) - 1]:
        raise ValueError("'region in view' needs the y/x plane in view; reset the dims order")
    camera = viewer.camera
    box = view_box(camera.center, camera.zoom, viewer.canvas.size, dims.ndisplay == 3)
    corners = []
    for vertical, horizontal in itertools.product(box[:, 0], box[:, 1]):
        corner = point.copy()
        corner[displayed[-2]], corner[displayed[-1]] = vertical, horizontal
        corners.append(layer.world_to_data(corner))
    return view_region(shape, corners, z if dims.ndisplay == 2 else None)


def describe_region(region: Region, shape) -> str:
    """Describe a region for a status line: ``"all 4x96x96 px"``, ``"64x64 px of section 2"``.

    Parameters
    ----------
    region : Region
        The region.
    shape : tuple of int
        The full data shape.

    Returns
    -------
    str
        A short phrase.
    """
    size = "x".join(str(s) for s in (region.shape[1:] if region.plane else region.shape))
    if region.covers(shape):
        return f"all {size} px"
    if region.plane:
        return f"{size} px of section {region.start[0]}"
    return f"{size} px at {tuple(int(a) for a in region.start)}"


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


def unwrap_proxy(obj):
    """Return the object behind napari's ``PublicOnlyProxy`` (identity checks need it)."""
    while hasattr(obj, "__wrapped__"):
        obj = obj.__wrapped__
    return obj


def voxel_size_text(layer) -> str:
    """Return the layer's voxel size (scale or metadata) as ``"z, y, x"``, or ``""``."""
    size = layer_voxel_size(layer.scale, layer.metadata)
    return ", ".join(f"{v:g}" for v in size) if size else ""
