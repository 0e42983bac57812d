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
from dataclasses import dataclass, field

import numpy as np

from .core.agglomeration import MergeTree, ThresholdedSegmentation, agglomerate
from .core.fragments import make_fragments, validate_voxel_size
from .core.region_graph import RegionGraph, build_region_graph

#: Merge-score threshold used when none is given (fixed, not tuned per volume).
DEFAULT_THRESHOLD = 0.5

#: Share of the progress bar given to the model; the rest is fragments and agglomeration.
_PREDICT_SHARE = 0.8


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
    """

    boundaries: np.ndarray
    fragments: np.ndarray
    graph: RegionGraph
    tree: MergeTree
    voxel_size: tuple
    threshold: float = DEFAULT_THRESHOLD
    model: dict = field(default_factory=dict)

    @property
    def n_fragments(self) -> int:
        """Largest fragment id."""
        return int(self.tree.n_fragments)

    @property
    def segmentation(self) -> np.ndarray:
        """Segment ids at :attr:`threshold`."""
        return self.segmentation_at(self.threshold)


def segment_boundaries_state(
    boundaries: np.ndarray,
    voxel_size,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    mask=None,
    model: dict | None = None,
) -> SegmentationResult:
    """Build fragments, region graph and merge order from a boundary map.

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

    Returns
    -------
    SegmentationResult
        The segmentation state.
    """
    voxel_size = tuple(float(v) for v in validate_voxel_size(voxel_size, boundaries.ndim))
    fragments = make_fragments(boundaries, voxel_size, mask=mask)
    n_fragments = int(fragments.max())
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
) -> SegmentationResult:
    """Segment neurons in an EM volume: predict boundaries, then agglomerate fragments.

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

    Returns
    -------
    SegmentationResult
        The segmentation state, with the model's name and config.

    Raises
    ------
    SegmentationCancelled
        When ``should_stop()`` returned True.
    ValueError
        For bad input (wrong dimensions, NaN, constant volume, bad voxel size).
    """
    from .models import PredictionCancelled, load_model, predict_boundaries

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
            progress=predict_progress,
            should_stop=stop,
        )
    except PredictionCancelled as error:
        raise SegmentationCancelled("segmentation cancelled") from error
    if stop():
        raise SegmentationCancelled("segmentation cancelled")
    report(_PREDICT_SHARE, "fragments and agglomeration")
    result = segment_boundaries_state(
        boundaries,
        voxel_size,
        threshold=threshold,
        mask=mask,
        model={"name": model_name, "config": loaded[1]},
    )
    report(1.0, "done")
    return result


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
        More attributes; they win over ``voxel_size``, ``threshold`` and
        ``model`` taken from the result.
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
        "model": {"name": result.model.get("name"), "config": result.model.get("config")},
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
