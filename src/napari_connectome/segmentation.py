"""One-click neuron segmentation: boundary model, fragments, region graph, merge order.

This module ties the model (:mod:`napari_connectome.models`) to the core
(:mod:`napari_connectome.core`). The result keeps the whole segmentation state
(boundaries, fragments, region graph, merge tree), so the segmentation at any
threshold is one table lookup: no model or watershed re-run.

Examples
--------
>>> from napari_connectome.segmentation import segment_volume
>>> result = segment_volume(raw, voxel_size=(50, 4, 4))  # doctest: +SKIP
>>> labels = result.segmentation_at(0.4)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .core.agglomeration import MergeTree, ThresholdedSegmentation, agglomerate
from .core.fragments import is_anisotropic, make_fragments, validate_voxel_size
from .core.region_graph import RegionGraph, build_region_graph, fragment_bboxes
from .core.sections import SectionAlignment, analyse_sections, apply_shifts, fill_missing_sections

#: Merge-score threshold used when none is given (fixed, not tuned per volume).
DEFAULT_THRESHOLD = 0.5

#: Share of the progress bar given to the model; the rest is fragments and agglomeration.
_PREDICT_SHARE = 0.8

#: Sections smaller than this (either edge, pixels) are not checked for shifts.
_MIN_ALIGN_PX = 32


class SegmentationCancelled(Exception):
    """The user cancelled a segmentation run."""


@dataclass
class SegmentationResult(ThresholdedSegmentation):
    """The segmentation state of one volume (or one region of it).

    Parameters
    ----------
    boundaries : numpy.ndarray
        ``float32`` boundary probabilities in [0, 1], the volume's shape.
    fragments : numpy.ndarray
        ``uint64`` fragment ids (supervoxels), 0 only outside the mask.
    graph : RegionGraph
        Region graph of the fragments with merge scores per edge.
    tree : MergeTree
        The full merge order with scores.
    voxel_size : tuple of float
        Voxel size in nm.
    threshold : float
        The merge-score threshold of :attr:`segmentation`.
    model : dict
        Name and config of the model that predicted the boundaries.
    sections : dict
        Section correction of an anisotropic stack: ``corrected`` (bool),
        ``missing`` (bridged sections), ``shifts`` (``[dy, dx]`` per section, the
        in-plane shift used to link it to its neighbours), ``shifted`` (sections
        with a non-zero shift) and ``note``; see :func:`segment_volume`.
    """

    boundaries: np.ndarray
    fragments: np.ndarray
    graph: RegionGraph
    tree: MergeTree
    voxel_size: tuple
    threshold: float = DEFAULT_THRESHOLD
    model: dict = field(default_factory=dict)
    sections: dict = field(default_factory=dict)

    @property
    def n_fragments(self) -> int:
        """Largest fragment id."""
        return int(self.tree.n_fragments)

    @property
    def segmentation(self) -> np.ndarray:
        """Segment ids at :attr:`threshold`."""
        return self.segmentation_at(self.threshold)


def _snap_to_stored_precision(boundaries: np.ndarray) -> np.ndarray:
    """Round float boundaries to the 1/255 steps the store keeps, in place.

    The region graph already scores contacts at this precision; rounding before the
    watershed too makes a segmentation reproducible from its stored boundaries, and a
    blockwise run (which works from the stored 8-bit map) equal to a whole-volume run.
    """
    if boundaries.dtype.kind != "f":
        return boundaries
    if not boundaries.flags.writeable:
        boundaries = boundaries.copy()
    np.clip(boundaries, 0.0, 1.0, out=boundaries)
    boundaries *= 255.0
    np.rint(boundaries, out=boundaries)
    boundaries /= 255.0
    return boundaries


def segment_boundaries_state(
    boundaries: np.ndarray,
    voxel_size,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    mask=None,
    model: dict | None = None,
    sections: SectionAlignment | None = None,
) -> SegmentationResult:
    """Build fragments, region graph and merge order from a boundary map.

    With ``sections`` (a 3D stack processed per section), the missing sections'
    boundaries are filled from their aligned neighbours and the region graph
    links each section to its neighbours after moving it by its shift, so
    objects continue through gaps and shifted sections. Fragments and every
    output stay on the input grid.

    Parameters
    ----------
    boundaries : numpy.ndarray
        Boundary probabilities in [0, 1].
    voxel_size : sequence of float
        Voxel size in nm, one per axis.
    threshold : float, optional
        Merge-score threshold of the result's segmentation.
    mask : numpy.ndarray of bool, optional
        Voxels of tissue; fragments are 0 elsewhere.
    model : dict, optional
        What predicted the boundaries, kept in the result.
    sections : SectionAlignment, optional
        Missing sections and shifts (:func:`~napari_connectome.core.sections.analyse_sections`);
        the missing sections of ``boundaries`` are overwritten in place.

    Notes
    -----
    Float ``boundaries`` are rounded in place to the 1/255 steps of the stored map.

    Returns
    -------
    SegmentationResult
        The segmentation state.

    Raises
    ------
    ValueError
        If ``sections`` does not fit the boundary map.
    """
    voxel_size = tuple(float(v) for v in validate_voxel_size(voxel_size, boundaries.ndim))
    if sections is not None:
        _check_sections(sections, boundaries.shape)
        fill_missing_sections(boundaries, sections.missing, sections.shifts)
    boundaries = _snap_to_stored_precision(boundaries)
    fragments = make_fragments(boundaries, voxel_size, mask=mask)
    n_fragments = int(fragments.max())
    if sections is not None and sections.shifted:
        graph = _aligned_graph(fragments, boundaries, voxel_size, sections.shifts, n_fragments)
    else:
        graph = build_region_graph(fragments, boundaries, voxel_size, n_fragments=n_fragments)
    tree = agglomerate(graph)
    return SegmentationResult(
        boundaries=boundaries,
        fragments=fragments,
        graph=graph,
        tree=tree,
        voxel_size=voxel_size,
        threshold=float(threshold),
        model=dict(model or {}),
        sections=_sections_record(sections),
    )


def _check_sections(sections: SectionAlignment, shape: tuple) -> None:
    if len(shape) != 3 or len(sections.shifts) != shape[0]:
        raise ValueError(
            f"the section analysis has {len(sections.shifts)} sections; the boundary map of "
            f"shape {shape} does not match (section correction needs the same 3D stack)"
        )
    if tuple(sections.plane_shape) != tuple(shape[1:]):
        raise ValueError(
            f"the section analysis is for sections of {tuple(sections.plane_shape)}, "
            f"the boundary map has {tuple(shape[1:])}"
        )


def _sections_record(sections: SectionAlignment | None, note: str = "") -> dict:
    if sections is None:
        return {"corrected": False, "note": note} if note else {}
    return {"corrected": True, **sections.to_dict(), "note": note}


def _aligned_graph(fragments, boundaries, voxel_size, shifts, n_fragments) -> RegionGraph:
    """Region graph with z contacts taken between sections moved by their shifts.

    In-plane contacts are unchanged (the canvas only adds id 0 around each
    section); sizes and bounding boxes are those of the input grid.
    """
    graph = build_region_graph(
        apply_shifts(fragments, shifts, fill=0),
        apply_shifts(boundaries, shifts, fill=0.0),
        voxel_size,
        n_fragments=n_fragments,
    )
    sizes = graph.fragment_sizes.copy()
    sizes[0] = int(np.count_nonzero(fragments == 0))
    return replace(
        graph, fragment_sizes=sizes, fragment_bboxes=fragment_bboxes(fragments, n_fragments)
    )


def segment_volume(
    volume,
    voxel_size,
    *,
    model=None,
    device: str = "auto",
    threshold: float = DEFAULT_THRESHOLD,
    mask=None,
    progress: Callable[[float, str], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
    section_correction: bool = True,
    augment: int | None = None,
) -> SegmentationResult:
    """Segment neurons in an EM volume: predict boundaries, then agglomerate fragments.

    Serial-section stacks (anisotropic 3D volumes) are checked section by
    section (``section_correction``, :func:`check_sections`): blank, constant or
    very low-contrast sections count as missing and get boundaries filled from
    their aligned neighbours, so objects continue through them; sections
    shifted in-plane against their neighbours (phase correlation, only shifts
    clearly above noise) are linked to their neighbours after moving them
    back. Every output keeps the input's shape and alignment; what was found is
    in ``result.sections``.

    Parameters
    ----------
    volume : array-like
        2D ``(y, x)`` or 3D ``(z, y, x)`` grayscale EM (numpy, zarr or dask;
        read plane by plane).
    voxel_size : sequence of float
        Voxel size in nm, one per axis.
    model : None, str, path or (torch.nn.Module, dict), optional
        None for the bundled model, a weights file, or a loaded model and its config.
    device : {"auto", "cpu", "cuda"}, optional
        Where the model runs; "auto" uses CUDA when present.
    threshold : float, optional
        Merge-score threshold of the result's segmentation.
    mask : numpy.ndarray of bool, optional
        Voxels of tissue; 0 elsewhere.
    progress : callable, optional
        ``progress(fraction, message)`` with ``fraction`` in [0, 1].
    should_stop : callable, optional
        Returns True to cancel; the run then raises :class:`SegmentationCancelled`.
    section_correction : bool, optional
        Detect and bridge missing sections and correct shifted sections of
        anisotropic stacks (default). 2D images and isotropic volumes are never
        changed.
    augment : {1, 2, 4, 8}, optional
        In-plane views averaged per tile (test-time augmentation, see
        :func:`~napari_connectome.models.inference.symmetries`); None for the
        default :data:`~napari_connectome.models.inference.DEFAULT_AUGMENT`
        (the four mirrors), 1 for the plain network.

    Returns
    -------
    SegmentationResult
        The segmentation state, with the model's name, config and views
        (``model["augment"]``) and the section correction (``sections``).

    Raises
    ------
    SegmentationCancelled
        When ``should_stop()`` returned True.
    ValueError
        For bad input (wrong dimensions, NaN, constant volume, bad voxel size).
    """
    from .models import PredictionCancelled, load_model, predict_boundaries
    from .models.inference import DEFAULT_AUGMENT

    views = DEFAULT_AUGMENT if augment is None else augment

    report = progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    model_name, loaded = _load(model, load_model)
    report(0.0, "predicting boundaries")

    def predict_progress(done: int, total: int) -> None:
        report(_PREDICT_SHARE * (done / max(total, 1)), f"predicting boundaries {done}/{total}")

    try:
        boundaries = predict_boundaries(
            volume,
            voxel_size,
            loaded,
            device=device,
            augment=views,
            progress=predict_progress,
            should_stop=stop,
        )
    except PredictionCancelled as error:
        raise SegmentationCancelled("segmentation cancelled") from error
    if stop():
        raise SegmentationCancelled("segmentation cancelled")
    sections, note = None, "section correction off"
    if section_correction:  # after the prediction, which validates the volume
        report(_PREDICT_SHARE, "checking sections")
        sections, note = check_sections(volume, voxel_size)
        if stop():
            raise SegmentationCancelled("segmentation cancelled")
    report(_PREDICT_SHARE, "fragments and agglomeration")
    result = segment_boundaries_state(
        boundaries,
        voxel_size,
        threshold=threshold,
        mask=mask,
        model={"name": model_name, "config": loaded[1], "augment": views},
        sections=sections,
    )
    if sections is None and note:
        result.sections = _sections_record(None, note)
    report(1.0, "done")
    return result


def check_sections(volume, voxel_size) -> tuple[SectionAlignment | None, str]:
    """Find missing and shifted sections of a serial-section stack, as :func:`segment_volume` does.

    Parameters
    ----------
    volume : array-like
        The image: 2D, or 3D ``(z, y, x)`` (read one section at a time).
    voxel_size : sequence of float
        Voxel size in nm, one per axis.

    Returns
    -------
    sections : SectionAlignment or None
        What to correct; None when nothing is (or can be) corrected.
    note : str
        Why nothing is corrected, or ``""``.

    Raises
    ------
    ValueError
        On a bad voxel size, or NaN / infinite values in a section.
    """
    shape = tuple(np.shape(volume))
    if len(shape) != 3 or not is_anisotropic(validate_voxel_size(voxel_size, len(shape))):
        return None, "not applied: only anisotropic (serial-section) 3D stacks are corrected"
    if shape[0] < 2:
        return None, "not applied: a single section"
    if min(shape[1:]) < _MIN_ALIGN_PX:
        return None, f"not applied: sections smaller than {_MIN_ALIGN_PX} px"
    sections = analyse_sections(volume, smooth=_smooth_px(voxel_size))
    if sections.missing.size == shape[0]:
        return None, "not applied: every section looks blank"
    if not sections.needs_correction:
        return None, "no missing or shifted section found"
    return sections, ""


def _smooth_px(voxel_size) -> float:
    """Band limit of the section correlation: about 24 nm (membrane scale), at least 1 px."""
    return max(1.0, 24.0 / min(float(voxel_size[1]), float(voxel_size[2])))


def _load(model, load_model):
    if model is None or model == "bundled":
        return "bundled", load_model("bundled")
    if isinstance(model, tuple):
        return str(model[1].get("name", "custom")), model
    return str(model), load_model(model)


def save_result(
    result: SegmentationResult,
    path,
    *,
    threshold: float | None = None,
    attrs: dict | None = None,
    overwrite: bool = False,
    progress: Callable[[float, str], object] | None = None,
):
    """Write a result's whole state to a segmentation store (atomically).

    The store gets the boundaries, fragments, region graph and merge tree,
    and computes its ``segmentation`` array at the threshold slab by slab.

    Parameters
    ----------
    result : SegmentationResult
        The state to write.
    path : path-like
        The store (``OUTPUT.zarr``).
    threshold : float, optional
        Threshold of the stored segmentation; the result's by default.
    attrs : dict, optional
        More attributes; they win over ``voxel_size``, ``threshold``,
        ``model`` and ``sections`` (the section correction) taken from the result.
    overwrite : bool, optional
        Replace an existing store.
    progress : callable, optional
        ``progress(fraction, message)``.

    Returns
    -------
    pathlib.Path
        The written store.
    """
    from .io import write_segmentation_store

    stored = {
        "voxel_size": list(result.voxel_size),
        "threshold": float(result.threshold if threshold is None else threshold),
        "model": {
            "name": result.model.get("name"),
            "config": result.model.get("config"),
            **({"augment": result.model["augment"]} if "augment" in result.model else {}),
        },
        **({"sections": result.sections} if result.sections else {}),
        **(attrs or {}),
    }
    return write_segmentation_store(
        path,
        boundaries=result.boundaries,
        fragments=result.fragments,
        graph=result.graph,
        tree=result.tree,
        attrs=stored,
        overwrite=overwrite,
        progress=progress,
    )
