"""The Evaluate dock: VOI and adapted Rand error of a segmentation against truth.

It scores the region in view by default (or the current slice, or the whole
volume): only that box of both layers' full-resolution data is read, so lazy
multiscale layers (zarr, OME-Zarr) are never loaded whole.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label

from ._run_controls import RunControls
from ._scope import (
    REGION_IN_VIEW,
    SCOPES,
    describe_region,
    level0,
    read_region,
    region_problem,
    scope_region,
)


def _labels_layers(widget) -> list:
    viewer = getattr(widget, "_viewer", None)
    if viewer is None:
        return []
    from napari.layers import Labels

    return [layer for layer in viewer.layers if isinstance(layer, Labels)]


def _looks_like_truth(name: str) -> bool:
    lowered = name.lower()
    return "truth" in lowered or lowered.startswith("gt") or "ground" in lowered


def format_scores(scores: dict) -> str:
    """Format metric scores for the dock.

    Parameters
    ----------
    scores : dict
        The output of :func:`napari_connectome.core.metrics.evaluate_segmentation`.

    Returns
    -------
    str
        Several lines of text.
    """
    return (
        f"VOI split  {scores['voi_split']:.4f} bits (false splits)\n"
        f"VOI merge  {scores['voi_merge']:.4f} bits (false merges)\n"
        f"VOI        {scores['voi']:.4f} bits\n"
        f"adapted Rand error  {scores['arand']:.4f}\n"
        f"{scores['n_voxels']:,} voxels scored; truth label 0 ignored"
    )


class EvaluateDock(Container):
    """Score a segmentation layer against a ground-truth layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name) whose labels layers are offered.
    """

    def __init__(self, napari_viewer) -> None:
        viewer = napari_viewer
        self._viewer = viewer
        self.segmentation = ComboBox(
            label="segmentation", choices=self._layer_choices, nullable=True
        )
        self.ground_truth = ComboBox(
            label="ground truth", choices=self._layer_choices, nullable=True
        )
        self.scope = ComboBox(
            label="scope",
            choices=list(SCOPES),
            value=REGION_IN_VIEW,
            tooltip="the part of the segmentation layer scored; only that part is read",
        )
        self.controls = RunControls(run_text="Evaluate")
        self.result = Label(value="")
        self.region = None
        super().__init__(
            widgets=[self.segmentation, self.ground_truth, self.scope, self.controls, self.result]
        )
        self.controls.run_button.changed.connect(self.run)
        viewer.layers.events.inserted.connect(self._on_layer_added)
        viewer.layers.events.removed.connect(self.reset_choices)
        viewer.layers.events.moved.connect(self.reset_choices)
        self.reset_choices()
        self._pick_defaults()

    def _layer_choices(self, _widget=None) -> list:
        return [(layer.name, layer) for layer in _labels_layers(self)]

    def _on_layer_added(self, _event=None) -> None:
        self.reset_choices()
        if self.segmentation.value is None or self.ground_truth.value is None:
            chosen = self.segmentation.value, self.ground_truth.value
            self._pick_defaults()
            self.segmentation.value = chosen[0] or self.segmentation.value
            self.ground_truth.value = chosen[1] or self.ground_truth.value

    def _pick_defaults(self) -> None:
        """Truth: a layer named like truth; segmentation: the top other labels layer."""
        layers = _labels_layers(self)
        truth = [layer for layer in layers if _looks_like_truth(layer.name)]
        others = [layer for layer in layers if not _looks_like_truth(layer.name)]
        self.ground_truth.value = truth[0] if truth else None
        self.segmentation.value = others[-1] if others else None

    def run(self) -> None:
        """Compute the scores off the GUI thread and show them."""
        from ..core.metrics import evaluate_segmentation

        segmentation, truth = self.segmentation.value, self.ground_truth.value
        if segmentation is None or truth is None:
            self.controls.status.value = "Error: pick a segmentation and a ground-truth layer."
            return
        seg_shape, truth_shape = _shape(segmentation), _shape(truth)
        if seg_shape != truth_shape:
            self.controls.status.value = (
                f"Error: '{segmentation.name}' has shape {seg_shape} but "
                f"'{truth.name}' has shape {truth_shape}; pick layers of the same shape."
            )
            return
        try:
            region = scope_region(self._viewer, segmentation, self.scope.value)
        except ValueError as error:
            self.controls.status.value = f"Error: {error}"
            return
        problem = region_problem(region, min_px=1)
        if problem:
            self.controls.status.value = f"Error: {problem}"
            return
        seg_data, truth_data = level0(segmentation), level0(truth)
        where = describe_region(region, seg_shape)

        def work():
            return evaluate_segmentation(
                read_region(seg_data, region), read_region(truth_data, region)
            )

        self.result.value = ""
        self.region = region
        self.controls.start(
            work,
            lambda scores: self._show(scores, where),
            busy_message=f"Evaluating {where}...",
        )

    def _show(self, scores: dict, where: str) -> None:
        self.result.value = format_scores(scores)
        self.controls.status.value = f"Done: {where}."


def _shape(layer) -> tuple:
    return tuple(level0(layer).shape)
