"""Synapse detection: model -> probabilities -> synapse objects -> partners.

Ties the synapse network (:mod:`napari_connectome.models.synapse_inference`) to
the core (:mod:`napari_connectome.core.synapses`). The result keeps the
detections and the partner probes, so partners follow any later edit of the
segmentation without a model run (:meth:`SynapseResult.update`).

Examples
--------
>>> from napari_connectome.synapse_detection import detect_volume
>>> result = detect_volume(raw, (50, 4, 4), segmentation=labels)  # doctest: +SKIP
>>> result.table.rows()  # id, z, y, x (nm), pre, post, confidence  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .core.connectome import connectome_edges
from .core.synapses import (
    DETECTION_DEFAULTS,
    SECTION_NM,
    SynapseDetections,
    SynapseTable,
    assign_partners,
    detect_synapses,
    effective_peak_threshold,
)

__all__ = [
    "DETECTION_DEFAULTS",
    "NoSynapsesFound",
    "SynapseDetectionCancelled",
    "SynapseResult",
    "counted",
    "detect_volume",
    "no_synapses_message",
    "predict_synapses",
    "synapse_count",
]


#: Share of the progress bar given to the model.
_PREDICT_SHARE = 0.9


class SynapseDetectionCancelled(Exception):
    """The user cancelled a synapse detection run."""


class NoSynapsesFound(ValueError):
    """Detection ran but found no synapse (the message says what to try)."""


@dataclass
class SynapseResult:
    """Synapses of one volume, with partners when a segmentation was given.

    Attributes
    ----------
    detections : SynapseDetections
        Objects: ids, positions (nm), sizes, confidence and the ``labels`` id volume.
    probability : numpy.ndarray
        ``float32`` synapse probability.
    presynaptic : numpy.ndarray
        ``float32`` presynaptic-side probability.
    table : SynapseTable or None
        Partners (None without a segmentation).
    model : dict
        Name and configuration of the model.
    settings : dict
        The detection settings used.
    postsynaptic : numpy.ndarray or None
        ``float32`` postsynaptic-side probability (None from a two-channel model;
        partners weigh each contact by the synapse probability squared either way,
        see :func:`~.core.synapse_probes.contact_source`).
    """

    detections: SynapseDetections
    probability: np.ndarray
    presynaptic: np.ndarray
    table: SynapseTable | None = None
    model: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    postsynaptic: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.detections)

    def assign(self, segmentation, table=None) -> SynapseTable:
        """Assign partners from a segmentation (segment ids, or fragments + ``table``).

        Parameters
        ----------
        segmentation : array-like
            Segment (or fragment) ids, the image's shape.
        table : numpy.ndarray, optional
            Fragment-to-segment table.

        Returns
        -------
        SynapseTable
            Also stored as :attr:`table`.
        """
        self.table = assign_partners(
            self.detections,
            segmentation,
            self.presynaptic,
            self.postsynaptic,
            synapse=self.probability,
            table=table,
        )
        return self.table

    def update(self, table=None, fragments=None, box=None) -> SynapseTable:
        """Re-derive partners after a proofreading edit (see :meth:`SynapseTable.update`).

        Raises
        ------
        ValueError
            If no partners were assigned yet.
        """
        if self.table is None:
            raise ValueError("no partners yet: assign them from a segmentation first")
        self.table.update(table, fragments, box)
        return self.table

    def edges(self, min_confidence: float = 0.0) -> np.ndarray:
        """Connectome edges ``(pre, post, count)`` (see :func:`connectome_edges`)."""
        if self.table is None:
            raise ValueError("no partners yet: assign them from a segmentation first")
        return connectome_edges(self.table, min_confidence)


def _load(model):
    from .models.synapse_inference import load_synapse_model

    if isinstance(model, tuple):
        return str(model[1].get("name", "custom")), model
    name = "bundled" if model is None or str(model) == "bundled" else str(model)
    return name, load_synapse_model(model)


def predict_synapses(
    volume, voxel_size, *, model=None, device="auto", progress=None, should_stop=None
):
    """Run the synapse network over a volume.

    Parameters
    ----------
    volume : array-like
        2D or 3D EM (numpy, zarr, dask; read plane by plane).
    voxel_size : sequence of float
        Voxel size in nm.
    model : None, str, path or (torch.nn.Module, dict)
        None for the bundled synapse model.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``.
    should_stop : callable, optional
        Returning True cancels (:class:`SynapseDetectionCancelled`).

    Returns
    -------
    tuple
        ``(maps, model_record)``: the
        :class:`~napari_connectome.models.synapse_inference.SynapseMaps` and the
        model's name, configuration and views averaged (``augment``).
    """
    from .models.inference import PredictionCancelled
    from .models.synapse_inference import SYNAPSE_AUGMENT, predict_synapse_maps

    name, loaded = _load(model)
    try:
        maps = predict_synapse_maps(
            volume,
            voxel_size,
            loaded,
            device=device,
            augment=SYNAPSE_AUGMENT,
            progress=progress,
            should_stop=should_stop,
        )
    except PredictionCancelled as error:
        raise SynapseDetectionCancelled("synapse detection cancelled") from error
    config = {k: v for k, v in loaded[1].items()}
    return maps, {"name": name, "config": config, "augment": SYNAPSE_AUGMENT}


def detect_volume(
    volume,
    voxel_size,
    *,
    segmentation=None,
    fragment_table=None,
    model=None,
    device: str = "auto",
    threshold: float | None = None,
    peak_threshold: float | None = None,
    min_size_nm3: float | None = None,
    nms_distance_nm: float | None = None,
    section_nm: float | None = None,
    progress: Callable[[float, str], object] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SynapseResult:
    """Detect synapses in an EM volume and, given a segmentation, their partners.

    Parameters
    ----------
    volume : array-like
        2D ``(y, x)`` or 3D ``(z, y, x)`` EM.
    voxel_size : sequence of float
        Voxel size in nm, one per axis.
    segmentation : array-like, optional
        Segment ids of the same shape (or fragment ids with ``fragment_table``).
    fragment_table : numpy.ndarray, optional
        Fragment-to-segment table of ``segmentation`` when it holds fragments.
    model : None, str, path or (torch.nn.Module, dict)
        The synapse network (None: bundled).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``.
    threshold, peak_threshold, min_size_nm3, nms_distance_nm : float, optional
        Detection settings (defaults: :data:`DETECTION_DEFAULTS`).
    section_nm : float, optional
        Thickness of a 2D image's pixels for sizes in nm^3 (one section of a
        serial-section volume: its section thickness); default
        :data:`~napari_connectome.core.synapses.SECTION_NM`. Unused for 3D.
    progress : callable, optional
        ``progress(fraction, message)``.
    should_stop : callable, optional
        Returns True to cancel (raises :class:`SynapseDetectionCancelled`).

    Returns
    -------
    SynapseResult
        Detections (possibly none: check ``len(result)``), maps and partners.

    Raises
    ------
    ValueError
        For bad input, or a segmentation whose shape differs from the image's.
    SynapseDetectionCancelled
        When ``should_stop()`` returned True.
    """
    shape = tuple(np.shape(volume))
    if segmentation is not None and tuple(np.shape(segmentation)) != shape:
        raise ValueError(
            f"the segmentation has shape {tuple(np.shape(segmentation))} but the image has "
            f"shape {shape}: choose the segmentation of this image"
        )
    report = progress or (lambda fraction, message: None)
    stop = should_stop or (lambda: False)
    settings = dict(DETECTION_DEFAULTS)
    for key, value in (
        ("threshold", threshold),
        ("peak_threshold", peak_threshold),
        ("min_size_nm3", min_size_nm3),
        ("nms_distance_nm", nms_distance_nm),
        (
            "section_nm",
            (SECTION_NM if section_nm is None else section_nm) if len(shape) == 2 else None,
        ),
    ):
        if value is not None:
            settings[key] = float(value)
    report(0.0, "predicting synapses")

    def predict_progress(done: int, total: int) -> None:
        report(_PREDICT_SHARE * done / max(total, 1), f"predicting synapses {done}/{total}")

    maps, model_record = predict_synapses(
        volume,
        voxel_size,
        model=model,
        device=device,
        progress=predict_progress,
        should_stop=stop,
    )
    if stop():
        raise SynapseDetectionCancelled("synapse detection cancelled")
    report(_PREDICT_SHARE, "finding synapse objects")
    detections = detect_synapses(maps.synapse, voxel_size, **settings)
    result = SynapseResult(
        detections,
        maps.synapse,
        maps.presynaptic,
        model=model_record,
        settings=settings,
        postsynaptic=maps.postsynaptic,
    )
    if segmentation is not None:  # also with no synapses: an empty table exports
        report(0.95, "assigning partners")
        result.assign(segmentation, fragment_table)
    report(1.0, f"found {synapse_count(len(detections))}")
    return result


def counted(n: int, noun: str) -> str:
    """Return ``"1 noun"`` or ``"n nouns"``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def synapse_count(n: int) -> str:
    """Return ``"1 synapse"`` or ``"n synapses"``."""
    return counted(n, "synapse")


def no_synapses_message(result: SynapseResult) -> str:
    """Explain to the user that a run found no synapse, and what to try.

    Parameters
    ----------
    result : SynapseResult
        The run.

    Returns
    -------
    str
        What happened and what to try.
    """
    peak = float(result.probability.max()) if result.probability.size else 0.0
    settings = result.settings
    threshold = settings.get("threshold", 0.5)
    floor = effective_peak_threshold(threshold, settings.get("peak_threshold"))
    return (
        f"no synapses found (highest synapse probability {peak:.2f}, threshold "
        f"{threshold:g}, peak threshold {floor:g}, size floor "
        f"{settings.get('min_size_nm3', 0):g} nm^3): check the voxel size, or "
        "lower the threshold, the peak threshold or the size floor"
    )
