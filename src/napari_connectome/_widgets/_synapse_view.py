"""What the Synapses dock computes, without Qt: placement, filtering, arrows, proofreading link.

A synapse run works on one box of the image (a :class:`~._scope.Region` of its
level-0 pixels, possibly one section seen as a 2D image); the segmentation
layer sits on the same pixel grid, shifted by a whole number of pixels (a crop
made by the Segment dock, a proofreading session of that crop). This module
turns run coordinates into image pixels, picks the rows above a confidence,
draws pre -> post arrows from the partner probes, and keeps a synapse table in
step with a proofreading session (:class:`ProofreadLink`) by reading fragment
ids at the probes: no model run.
"""

from __future__ import annotations

import numpy as np

from ..core.connectome import connectome_edges
from ..core.synapse_probes import probes_in_box
from ._scope import Region

#: Tolerance when checking that two layers share a pixel grid (in pixels).
_GRID_TOL = 1e-3

#: How many neurons the connectivity matrix shows when none are chosen.
TOP_NEURONS = 10


def grid_offset(image, labels) -> tuple[int, ...]:
    """Return the offset of a labels layer on an image layer's pixel grid.

    Parameters
    ----------
    image, labels : napari.layers.Layer
        Any objects with ``name``, ``ndim``, ``scale``, ``translate`` and a
        level-0 ``shape`` (``data.shape``, or ``data[0].shape`` when multiscale).

    Returns
    -------
    tuple of int
        ``labels pixel = image pixel - offset`` along each axis.

    Raises
    ------
    ValueError
        When the layers differ in dimensions, pixel size, or are not shifted by
        whole pixels, or when a labels layer of another shape is placed right on
        the image (not a crop: the segmentation of some other image).
    """
    ishape, lshape = _shape(image), _shape(labels)
    if len(lshape) != len(ishape):
        raise ValueError(
            f"the segmentation '{labels.name}' is {len(lshape)}D but the image "
            f"'{image.name}' is {len(ishape)}D: pick the segmentation of this image"
        )
    iscale = np.asarray(image.scale, float)
    lscale = np.asarray(labels.scale, float)
    shift = (np.asarray(labels.translate, float) - np.asarray(image.translate, float)) / iscale
    offset = np.round(shift)
    if not np.allclose(lscale, iscale, rtol=_GRID_TOL) or np.any(
        np.abs(shift - offset) > _GRID_TOL
    ):
        raise ValueError(
            f"the segmentation '{labels.name}' (shape {lshape}, pixel size "
            f"{tuple(float(s) for s in lscale)}) is not on the pixel grid of the image "
            f"'{image.name}' (shape {ishape}, pixel size {tuple(float(s) for s in iscale)}): "
            "pick the segmentation of this image"
        )
    offset = tuple(int(o) for o in offset)
    crop = any(offset) or str(labels.metadata.get("source", "")).startswith("napari-connectome")
    if lshape != ishape and not crop:
        raise ValueError(
            f"the segmentation '{labels.name}' has shape {lshape} but the image "
            f"'{image.name}' has shape {ishape}: pick the segmentation of this image "
            "(a crop must be placed on it with the layer's translate)"
        )
    return offset


def _shape(layer) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(n) for n in data.shape)


def covered_region(region: Region, image_shape, offset, labels_shape) -> Region:
    """Return the part of a scope region that the segmentation covers.

    Parameters
    ----------
    region : Region
        The scope, in image pixels.
    image_shape, labels_shape : tuple of int
        Level-0 shapes of the image and the labels layer.
    offset : tuple of int
        :func:`grid_offset`.

    Returns
    -------
    Region
        The overlap, in image pixels (same ``plane`` flag).

    Raises
    ------
    ValueError
        When the segmentation covers none of the region.
    """
    lo = [max(a, o, 0) for a, o in zip(region.start, offset, strict=True)]
    hi = [
        min(b, o + n, s)
        for b, o, n, s in zip(region.stop, offset, labels_shape, image_shape, strict=True)
    ]
    if any(h <= low for low, h in zip(lo, hi, strict=True)):
        where = "this section" if region.plane else "the scope"
        raise ValueError(
            f"the segmentation does not cover {where} (it spans image pixels "
            f"{tuple(offset)} to {tuple(o + n for o, n in zip(offset, labels_shape, strict=True))}"
            "): segment this part first, or change the scope"
        )
    return Region(tuple(lo), tuple(hi), region.plane)


def shifted(region: Region, offset) -> Region:
    """Return a region moved by ``-offset`` (image pixels to labels pixels)."""
    return Region(
        tuple(a - o for a, o in zip(region.start, offset, strict=True)),
        tuple(b - o for b, o in zip(region.stop, offset, strict=True)),
        region.plane,
    )


def to_image(coords, region: Region) -> np.ndarray:
    """Turn voxel coordinates of a run volume into image pixels.

    Parameters
    ----------
    coords : array-like, shape (n, k)
        Coordinates in the run volume (``k = 2`` for a plane region of a 3D image).
    region : Region
        The run's region.

    Returns
    -------
    numpy.ndarray
        ``(n, image ndim)`` float pixel coordinates.
    """
    start = np.asarray(region.start, float)
    coords = np.asarray(coords, float)
    if region.plane:
        if not len(coords):
            return np.zeros((0, start.size))
        z = np.full((len(coords), 1), start[0])
        return np.concatenate([z, coords + start[1:]], axis=1)
    if not len(coords):
        return np.zeros((0, start.size))
    return coords + start


def synapse_pixels(positions_nm, voxel_size, region: Region) -> np.ndarray:
    """Return synapse centres (nm in the run volume) as image pixels.

    Parameters
    ----------
    positions_nm : numpy.ndarray
        ``(n, k)`` centres in nm (voxel index times voxel size).
    voxel_size : sequence of float
        The run's voxel size (``k`` values).
    region : Region
        The run's region.

    Returns
    -------
    numpy.ndarray
        ``(n, image ndim)`` pixel coordinates.
    """
    positions = np.asarray(positions_nm, float)
    if not len(positions):
        return np.zeros((0, len(region.start)))
    vs = np.asarray(voxel_size, float)[-positions.shape[1] :]
    return to_image(positions / vs, region)


def rows_above(rows: np.ndarray, ids, confidence, threshold: float) -> np.ndarray:
    """Return the table rows whose synapse confidence reaches a threshold.

    Parameters
    ----------
    rows : numpy.ndarray
        ``SynapseTable.rows()``.
    ids, confidence : numpy.ndarray
        Synapse ids and their detection confidence.
    threshold : float
        Lowest confidence kept.

    Returns
    -------
    numpy.ndarray
        The kept rows.
    """
    keep_ids = np.asarray(ids)[np.asarray(confidence) >= threshold]
    return rows[np.isin(rows["id"], keep_ids)]


def pair_arrows(
    table, voxel_size, region: Region, synapses=None, segments=None
) -> tuple[np.ndarray, np.ndarray]:
    """Return one arrow per (synapse, postsynaptic partner), pre side to post side.

    The arrow starts at the centre of the synapse's probes in its presynaptic
    segment (weighted by the presynaptic-side probability) and ends at the
    centre of its contact probes in the postsynaptic segment; an end with no
    such probe is the synapse centre.

    Parameters
    ----------
    table : SynapseTable
        Synapses with partners.
    voxel_size : sequence of float
        The run's voxel size (nm), one per axis of the run volume.
    region : Region
        The run's region (arrows are in image pixels).
    synapses : numpy.ndarray, optional
        Boolean mask of the synapse rows to draw (default: all).
    segments : numpy.ndarray, optional
        ``table.segments_at_probes()`` when already at hand.

    Returns
    -------
    tuple of numpy.ndarray
        ``(vectors, rows)``: ``(k, 2, image ndim)`` napari vectors (start,
        displacement) and the synapse row (0-based) of each arrow.
    """
    ndim = len(region.start)
    pairs = np.asarray(table.pairs)
    if synapses is not None:
        pairs = pairs[np.asarray(synapses)[pairs[:, 0].astype(np.int64)]]
    if not len(pairs):
        return np.zeros((0, 2, ndim)), np.zeros(0, np.int64)
    probes = table.probes
    seg = table.segments_at_probes() if segments is None else segments
    syn = probes.synapse.astype(np.int64)
    if synapses is not None:
        wanted = np.asarray(synapses)[syn]
        probes_sub = (seg[wanted], syn[wanted])
    else:
        wanted = slice(None)
        probes_sub = (seg, syn)
    seg, syn = probes_sub
    # only probes that place an arrow end: presynaptic weight in the presynaptic
    # segment, contact probes in any other segment
    pre_w = probes.pre[wanted].astype(float)
    on_pre = (seg != 0) & (seg == table.pre[syn]) & (pre_w > 0)
    on_post = (seg != 0) & (seg != table.pre[syn]) & (probes.contact[wanted] > 0)
    use = on_pre | on_post
    seg, syn, pre_w = seg[use], syn[use], np.where(on_pre[use], pre_w[use], 0.0)
    contact = on_post[use].astype(float)
    coords = probes.coords[wanted][use].astype(float)
    if not seg.size or int(seg.max()) < 2**32:  # one sort: (synapse, segment) in 64 bits

        def encode(rows, segs):
            rows, segs = np.asarray(rows, np.uint64), np.asarray(segs, np.uint64)
            return (rows << np.uint64(32)) | segs, segs < 2**32

    else:  # huge segment ids: number them densely first
        segments = np.unique(seg)

        def encode(rows, segs):
            index = np.minimum(np.searchsorted(segments, segs), segments.size - 1)
            ok = segments[index] == segs
            return np.asarray(rows, np.uint64) * np.uint64(segments.size) + index, ok

    key, _ = encode(syn, seg)
    groups, group_of = np.unique(key, return_inverse=True)
    group_of = group_of.ravel()

    def centres(weight):
        total = np.bincount(group_of, weights=weight, minlength=groups.size)
        sums = np.stack(
            [np.bincount(group_of, weights=weight * c, minlength=groups.size) for c in coords.T],
            axis=1,
        ).reshape(groups.size, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / np.maximum(total, 1e-300)[:, None], total

    pre_c, pre_t = centres(pre_w)
    con_c, con_t = centres(contact)

    def lookup(rows, segs):
        k, ok = encode(rows, segs)
        if not groups.size:
            return np.zeros(len(k), np.int64), np.zeros(len(k), bool)
        g = np.minimum(np.searchsorted(groups, k), groups.size - 1)
        return g, ok & (groups[g] == k)

    rows = pairs[:, 0].astype(np.int64)
    positions = np.asarray(table.positions, float)
    centre = positions[rows] / np.asarray(voxel_size, float)[-positions.shape[1] :]
    g_pre, ok_pre = lookup(rows, table.pre[rows].astype(np.uint64))
    ok_pre &= pre_t[g_pre] > 0 if groups.size else ok_pre
    start = np.where(ok_pre[:, None], pre_c[g_pre], centre) if groups.size else centre
    g_post, ok_post = lookup(rows, pairs[:, 1].astype(np.uint64))
    ok_post &= con_t[g_post] > 0 if groups.size else ok_post
    end = np.where(ok_post[:, None], con_c[g_post], centre) if groups.size else centre
    start_px, end_px = to_image(start, region), to_image(end, region)
    vectors = np.stack([start_px, end_px - start_px], axis=1)
    return vectors, rows


def top_neurons(edges: np.ndarray, k: int = TOP_NEURONS) -> list[int]:
    """Return up to ``k`` neurons of the strongest connections.

    The neurons are taken pair by pair from the edges with the most synapses, so
    the matrix of them is dense in the strong connections (ranking neurons by
    their total synapses instead picks presynaptic hubs whose partners are left
    out).

    Parameters
    ----------
    edges : numpy.ndarray
        :func:`~napari_connectome.core.connectome.connectome_edges` output.
    k : int
        How many.

    Returns
    -------
    list of int
        Segment ids, in the order their strongest connection comes.
    """
    order = np.lexsort((edges["post"], edges["pre"], -edges["count"].astype(np.int64)))
    neurons: list[int] = []
    for index in order:
        pair = [int(edges["pre"][index]), int(edges["post"][index])]
        new = [n for n in dict.fromkeys(pair) if n not in neurons]
        if len(neurons) + len(new) > k:
            break
        neurons += new
    return neurons


def parse_neurons(text: str) -> list[int]:
    """Parse ``"12, 40 7"`` into segment ids.

    Raises
    ------
    ValueError
        When a value is not a positive whole number.
    """
    out = []
    for part in text.replace(",", " ").split():
        try:
            value = int(part)
        except ValueError:
            raise ValueError(
                f"neurons must be segment ids (whole numbers) separated by commas; got '{part}'"
            ) from None
        if value <= 0:
            raise ValueError(f"segment ids are positive; got {value}")
        if value not in out:
            out.append(value)
    return out


def filtered_edges(rows: np.ndarray) -> np.ndarray:
    """Return the connectome of some table rows (see ``connectome_edges``)."""
    return connectome_edges(rows)


class ProofreadLink:
    """Keep a synapse table in step with a proofreading session (no model run).

    Every probe of the table is mapped once to a voxel of the session's state;
    after each merge, split, undo or redo the history tells the link, which
    re-reads the fragment ids at the probes and takes the new
    fragment-to-segment table.

    Parameters
    ----------
    table : SynapseTable
        The synapse table (changed in place).
    history : History
        The session's history (its ``listeners`` get this link).
    region : Region
        The synapse run's region (image pixels).
    offset : tuple of int
        Labels-layer pixel = image pixel - offset.
    lifted : bool
        The labels layer shows a 2D state as one section (its first axis is dropped).
    on_change : callable
        Called with no argument after each update (on the thread of the edit).
    """

    def __init__(self, table, history, region: Region, offset, lifted: bool, on_change) -> None:
        self.table, self.history, self.on_change = table, history, on_change
        self.state = history.state
        image = to_image(table.probes.coords, region)
        coords = np.rint(image - np.asarray(offset, float)).astype(np.int64)
        if lifted:
            coords = coords[:, 1:]
        shape = np.asarray(self.state.fragments.shape)
        self.valid = np.all((coords >= 0) & (coords < shape), axis=1)
        self.coords = coords[self.valid]
        self._flat = np.ravel_multi_index(tuple(self.coords.T), self.state.fragments.shape)
        self.error: str | None = None
        self._frags: np.ndarray | None = None
        self.sync()
        history.listeners.append(self._listener)

    def sync(self, box=None) -> None:
        """Read fragment ids at the probes and the segment table from the state.

        Parameters
        ----------
        box : tuple of slice, optional
            Where the fragments may have changed (state coordinates); only the
            probes inside are read again. Everywhere by default.
        """
        if box is None or self._frags is None:
            self._frags = np.zeros(len(self.coords), np.uint64)
            box = None
        inside = probes_in_box(self.coords, box)
        if inside.any():
            self._frags[inside] = self._read(inside if box is not None else None)
        frags = np.zeros(len(self.valid), np.uint64)
        frags[self.valid] = self._frags
        self.table.set_probe_fragments(frags)  # regroups only synapses whose probes changed
        self.table.segment_table = np.array(self.state.table)
        self.table.derive()

    def _read(self, inside) -> np.ndarray:
        """Return the fragment ids at the probes (``inside``: a mask of them; None: all)."""
        fragments = self.state.fragments
        if isinstance(fragments, np.ndarray):  # flat indices: faster than index arrays
            flat = self._flat if inside is None else self._flat[inside]
            return np.take(fragments.reshape(-1), flat)
        # on disk (a lazy session): read the probes' points only, chunk by chunk
        coords = self.coords if inside is None else self.coords[inside]
        return np.asarray(fragments[tuple(coords.T)], dtype=np.uint64).reshape(-1)

    def _listener(self, action, entry) -> None:
        # never raise: a raising listener rolls the edit back
        try:
            box = getattr(entry, "bbox", None)
            self.sync(box if box and all(isinstance(b, slice) for b in box) else None)
            self.error = None
        except Exception as error:  # noqa: BLE001 - reported, never propagated
            self.error = f"synapse partners not updated after {action}: {error}"
        try:
            self.on_change()
        except Exception as error:  # noqa: BLE001
            self.error = f"synapse views not updated after {action}: {error}"

    def detach(self) -> None:
        """Stop following the session."""
        if self._listener in self.history.listeners:
            self.history.listeners.remove(self._listener)
