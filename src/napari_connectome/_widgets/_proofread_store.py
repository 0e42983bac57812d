"""Session stores of the Proofread dock, and where their layers go, without Qt or napari.

A proofreading session lives in a segmentation store (its journal is inside
it): a store the ``segment`` command wrote, or one the dock writes from the
Segment dock's in-memory result, with the placement of its layers kept in the
:data:`DISPLAY_ATTR` root attribute so a reopened session lands where it was.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

import numpy as np

#: Root attribute of a session store telling the dock where to put its layers.
DISPLAY_ATTR = "napari_display"

#: Fragments (as ``uint64`` in memory) larger than this many bytes are opened lazily
#: (read box by box from the store); None: 512 MiB or an eighth of the RAM, the smaller.
LAZY_BYTES: int | None = None


def lazy_budget() -> int:
    """Return the fragment bytes above which a session opens lazily (:data:`LAZY_BYTES`)."""
    if LAZY_BYTES is not None:
        return int(LAZY_BYTES)
    budget = 512 * 2**20
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not on every platform
        return budget
    return int(min(budget, ram // 8)) if ram > 0 else budget


def fragments_bytes(path) -> int:
    """Return the bytes a store's fragments take in memory (``uint64``), 0 when unreadable."""
    import zarr

    try:
        shape = zarr.open_group(str(path), mode="r")["fragments"].shape
    except Exception:  # noqa: BLE001 - the opening itself reports a bad store
        return 0
    return int(np.prod(shape, dtype=np.int64)) * 8


def default_session_path(name: str, now: _dt.datetime | None = None, root=None) -> Path:
    """Return ``ROOT/<name>-<yyyymmdd-hhmmss>.zarr`` for a new session store.

    Parameters
    ----------
    name : str
        Image (or layer) name; characters other than letters, digits, ``-``,
        ``_`` and ``.`` become ``_``.
    now : datetime.datetime, optional
        Time stamp; the local time by default.
    root : path-like, optional
        Folder; ``~/napari-connectome-sessions`` by default.

    Returns
    -------
    pathlib.Path
        The store path (not created).
    """
    now = now or _dt.datetime.now()
    root = Path("~/napari-connectome-sessions" if root is None else root).expanduser()
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "segmentation"
    return root / f"{safe}-{now:%Y%m%d-%H%M%S}.zarr"


def write_session_store(result, path, threshold: float, display: dict | None = None) -> Path:
    """Write an in-memory segmentation result to a new session store.

    Parameters
    ----------
    result : SegmentationResult
        The Segment dock's result.
    path : path-like
        The store to create (must not exist); its folder is created.
    threshold : float
        Threshold of the starting segmentation (the journal starts there).
    display : dict, optional
        ``name``, ``scale``, ``translate`` and ``lift`` of the layers, kept in
        the store so a reopened session lands in the same place.

    Returns
    -------
    pathlib.Path
        The written store.
    """
    from ..segmentation import save_result

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    attrs = {"input": "napari-connectome Proofread dock"}
    if display:
        attrs[DISPLAY_ATTR] = display
    return save_result(result, path, threshold=threshold, attrs=attrs)


def result_display(result, name="segmentation", scale=None, translate=None, lift=False) -> dict:
    """Return where a result's layers go: ``name``, ``scale``, ``translate``, ``lift``.

    Parameters
    ----------
    result : SegmentationResult
        The result.
    name : str, optional
        Image name.
    scale, translate : sequence of float, optional
        Layer placement; the voxel size (1 for a lifted axis) and 0 by default.
    lift : bool, optional
        A 2D result shown as one section of a 3D image.

    Returns
    -------
    dict
        JSON-serialisable placement (stored as the :data:`DISPLAY_ATTR` attribute).
    """
    ndim = result.fragments.ndim + int(lift)
    scale = ([1.0] * int(lift) + list(result.voxel_size)) if scale is None else scale
    translate = [0.0] * ndim if translate is None else translate
    return {
        "name": str(name),
        "scale": [float(v) for v in scale],
        "translate": [float(v) for v in translate],
        "lift": bool(lift),
    }


def store_display(attrs: dict, store: Path, ndim: int) -> dict:
    """Return where a store's layers go (see :func:`result_display`), from its attributes.

    Stores the ``segment`` command wrote have no placement: they are named after
    the store and placed by their voxel size at the origin.
    """
    shown = dict(attrs.get(DISPLAY_ATTR) or {})
    lift = bool(shown.get("lift", False))
    ndim += int(lift)
    return {
        "name": shown.get("name") or Path(store).name.removesuffix(".zarr"),
        "scale": shown.get("scale") or [float(v) for v in attrs["voxel_size"]][-ndim:],
        "translate": shown.get("translate") or [0.0] * ndim,
        "lift": lift,
    }


def open_session(path, lazy: bool | None = None):
    """Open a store for proofreading (journal replayed) and read its attributes.

    Parameters
    ----------
    path : path-like
        The segmentation store.
    lazy : bool, optional
        Keep the fragments and boundaries on disk (read box by box); None:
        when the fragments are larger than :func:`lazy_budget`.

    Returns
    -------
    tuple
        ``(ProofreadingSession, attrs)``.

    Raises
    ------
    ValueError
        When the store or its journal cannot be read (VolumeError, JournalError, OSError).
    """
    import zarr

    from ..io.journal import open_proofreading

    try:
        if lazy is None:
            lazy = fragments_bytes(path) > lazy_budget()
        session = open_proofreading(path, lazy=bool(lazy))
        attrs = dict(zarr.open_group(str(session.store), mode="r").attrs)
    except OSError as error:
        raise ValueError(str(error)) from error
    return session, attrs


def seed_points(seeds, lift: bool, colors) -> tuple[np.ndarray, list]:
    """Return the coordinates and colours of split seeds for a Points layer.

    Parameters
    ----------
    seeds : list of list of tuple
        Seeds per part (state coordinates).
    lift : bool
        Prepend a 0 (the section of a lifted 2D state).
    colors : sequence of str
        Colour of part 1, 2, ... (cycled).

    Returns
    -------
    tuple
        ``(coords, colors)``: ``(n, ndim)`` float coordinates and one colour each.
    """
    flat = [(tuple(p), part) for part, group in enumerate(seeds) for p in group]
    coords = np.array([(0, *p) if lift else p for p, _ in flat], dtype=float)
    return coords, [colors[part % len(colors)] for _, part in flat]


def preview_layer(preview, lift: bool, scale, translate) -> tuple[np.ndarray, np.ndarray]:
    """Return a split preview's part labels in the segment's box, and the box's translate.

    Parameters
    ----------
    preview : SplitPreview
        The preview.
    lift : bool
        Add the section axis of a lifted 2D state.
    scale, translate : sequence of float
        Placement of the proofread layer.

    Returns
    -------
    tuple
        ``(labels, translate)``: part index + 1 per voxel of the box, and where
        the box's first voxel lies in the world.
    """
    box = preview.state.segment_bbox(preview.segment)
    parts, start = preview.part_labels(box), [s.start for s in box]
    if lift:
        parts, start = parts[None], [0, *start]
    scale = np.asarray(scale, dtype=float)
    return parts, np.asarray(translate, dtype=float) + np.asarray(start) * scale
