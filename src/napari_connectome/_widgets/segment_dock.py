"""The Segment dock: one-click neuron segmentation of an image layer, with a live threshold.

The dock reads its controls, reads only the chosen region of the image layer
(in the worker thread), runs :func:`napari_connectome.segmentation.segment_volume`
off the GUI thread with progress and cancel, and shows the boundary map and the
segmentation as layers aligned over that region. The threshold slider then
re-segments with a table lookup (:meth:`SegmentationResult.segmentation_at`).
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSlider, Label, LineEdit

from ..segmentation import DEFAULT_THRESHOLD
from ._layer_output import LayerOutput
from ._model_choice import ModelChoice
from ._run_controls import RunControls
from ._scope import (
    CURRENT_SLICE,
    REGION_IN_VIEW,
    SCOPES,
    WHOLE_VOLUME,
    level0,
    parse_voxel_size,
    read_region,
    region_problem,
    scope_region,
    unwrap_proxy,
    voxel_size_text,
)

__all__ = ["CURRENT_SLICE", "REGION_IN_VIEW", "SCOPES", "WHOLE_VOLUME", "SegmentDock"]


class SegmentDock(Container):
    """Segment neurons in an image layer: boundaries, fragments, agglomeration.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name) whose image layers are offered.

    Attributes
    ----------
    result : SegmentationResult or None
        The last segmentation state (for the threshold slider and proofreading).
    region : Region or None
        The part of the image (level 0 pixels) that :attr:`result` covers.
    """

    def __init__(self, napari_viewer) -> None:
        viewer = napari_viewer
        self._viewer = viewer
        self._made: list = []  # layers this dock made (never offered as input)
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self._model_choice = ModelChoice()
        self.model = self._model_choice.model
        self.model_file = self._model_choice.model_file
        self.device = self._model_choice.device
        self.scope = ComboBox(label="scope", choices=list(SCOPES), value=REGION_IN_VIEW)
        self.voxel_size = LineEdit(
            label="voxel size (nm)", tooltip="z, y, x (3D) or y, x (2D), in nm", value=""
        )
        self.correct_sections = CheckBox(
            label="correct sections",
            value=True,
            tooltip="serial-section stacks: bridge blank sections and re-align shifted ones "
            "before linking sections",
        )
        self.controls = RunControls(run_text="Segment")
        self.threshold = FloatSlider(
            label="threshold",
            min=0.0,
            max=1.0,
            step=0.01,
            value=DEFAULT_THRESHOLD,
            enabled=False,
            tracking=False,
            tooltip="merge score: higher merges more (a table lookup, no re-run)",
        )
        self.counts = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.model,
                self.model_file,
                self.device,
                self.scope,
                self.voxel_size,
                self.correct_sections,
                self.controls,
                self.threshold,
                self.counts,
            ]
        )
        self.result = None
        self.region = None
        self._placement: dict = {}
        self._output = LayerOutput(viewer)
        self.controls.run_button.changed.connect(self.run)
        self.image.changed.connect(self._on_image)
        self.threshold.changed.connect(self._on_threshold)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.layers.events.moved.connect(self._on_layers_changed)
        viewer.layers.selection.events.active.connect(self._on_active)
        self.reset_choices()
        self._pick_default()

    # --- layer choice and voxel size -------------------------------------------------

    def _images(self) -> list:
        from napari.layers import Image

        viewer = getattr(self, "_viewer", None)
        if viewer is None:
            return []
        made = getattr(self, "_made", [])
        return [
            unwrap_proxy(layer)
            for layer in viewer.layers
            if isinstance(layer, Image) and not any(layer is m for m in made)
        ]

    def _image_choices(self, _widget=None) -> list:
        return [(layer.name, layer) for layer in self._images()]

    def _pick_default(self) -> None:
        """Pick the active layer when it is an image, else the top image layer."""
        images = self._images()
        active = unwrap_proxy(self._viewer.layers.selection.active)
        if any(active is layer for layer in images):
            self.image.value = active
        elif images:
            self.image.value = images[-1]
        self._on_image()

    def _on_layers_changed(self, _event=None) -> None:
        self.reset_choices()
        if self.image.value is None:
            self._pick_default()

    def _on_active(self, _event=None) -> None:
        active = unwrap_proxy(self._viewer.layers.selection.active)
        if any(active is layer for layer in self._images()) and active is not self.image.value:
            self.image.value = active

    def _on_image(self, _value=None) -> None:
        layer = self.image.value
        if layer is None:
            return
        self.voxel_size.value = voxel_size_text(layer)

    # --- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Check the controls, then segment the chosen region off the GUI thread."""
        try:
            layer, data, region, voxel_size, model, device = self._prepare()
        except ValueError as error:
            self.controls.status.value = f"Error: {error}"
            return
        from ..segmentation import segment_volume

        threshold = float(self.threshold.value)
        section_correction = bool(self.correct_sections.value)
        shape = "x".join(str(s) for s in region.shape)

        def work(report, should_stop):
            report(0.0, f"Reading {shape} px...")
            volume = read_region(data, region)  # only the chunks under the region
            return segment_volume(
                volume,
                voxel_size,
                model=model,
                device=device,
                threshold=threshold,
                section_correction=section_correction,
                progress=lambda fraction, message: report(fraction, message.capitalize()),
                should_stop=should_stop,
            )

        placement = {
            "name": layer.name,
            "scale": tuple(float(s) for s in layer.scale),
            "translate": tuple(
                float(t + a * s)
                for t, a, s in zip(layer.translate, region.start, layer.scale, strict=True)
            ),
            "plane": region.plane,
        }
        self.controls.start(
            work,
            lambda result: self._show(result, region, placement),
            busy_message=f"Segmenting {shape} px of '{layer.name}'...",
            progress=True,
        )

    def _prepare(self) -> tuple:
        """Read and check the controls; raise ValueError with a message for the user."""
        layer = self.image.value
        if layer is None or layer not in self._viewer.layers:
            raise ValueError("no image layer: open an EM image (or File > Open Sample) first")
        if layer.rgb:
            raise ValueError(f"'{layer.name}' is an RGB image; convert it to one grey channel")
        if layer.ndim not in (2, 3):
            raise ValueError(
                f"'{layer.name}' is {layer.ndim}D; pick a 2D (y, x) or 3D (z, y, x) image"
            )
        data = level0(layer)
        voxel_size = parse_voxel_size(self.voxel_size.value, layer.ndim)
        model = self._chosen_model()
        device = self._model_choice.chosen_device()
        region = scope_region(self._viewer, layer, self.scope.value)
        problem = region_problem(region)
        if problem:
            raise ValueError(problem)
        if region.plane or layer.ndim == 2:
            voxel_size = voxel_size[-2:]
        return layer, data, region, voxel_size, model, device

    def _chosen_model(self) -> str:
        from ..models import bundled_model_path

        return self._model_choice.chosen_model(
            bundled_model_path,
            "the bundled model weights are not installed; pick a model file instead",
            "model",
        )

    # --- results on layers (GUI thread) ---------------------------------------------

    def _show(self, result, region, placement: dict) -> None:
        self.result, self.region, self._placement = result, region, placement
        common = {
            "scale": placement["scale"],
            "translate": placement["translate"],
            "metadata": {
                "voxel_size_nm": tuple(placement["scale"]),
                "region_start": tuple(int(a) for a in region.start),
                "source": "napari-connectome Segment dock",
            },
        }
        boundaries = self._output.put(
            self._lift(result.boundaries),
            {
                "name": f"{placement['name']} boundaries",
                "colormap": "gray",
                "contrast_limits": (0.0, 1.0),
                "opacity": 0.5,
                "blending": "translucent",
                "visible": False,
                **common,
            },
            "image",
        )
        self._remember(boundaries)
        self.threshold.enabled = True
        self._show_labels(float(self.threshold.value), common)
        shape = "x".join(str(s) for s in region.shape)
        self.controls.status.value = f"Done: {shape} px of '{placement['name']}'."

    def _lift(self, array: np.ndarray) -> np.ndarray:
        """Give a one-section result of a 3D image its z axis back."""
        return array[None] if self._placement.get("plane") else array

    def _remember(self, layer) -> None:
        layer = unwrap_proxy(layer)
        if not any(layer is m for m in self._made):
            self._made.append(layer)
            self.reset_choices()

    def _show_labels(self, threshold: float, kwargs: dict | None = None) -> None:
        result = self.result
        labels = self._lift(result.segmentation_at(threshold))
        name = f"{self._placement['name']} segmentation"
        if kwargs is None:  # the slider: same place, new ids
            kwargs = {k: self._placement[k] for k in ("scale", "translate")}
        self._remember(self._output.put(labels, {"name": name, **kwargs}, "labels"))
        n_segments = int(np.unique(result.table_at(threshold)[1:]).size)
        self.counts.value = (
            f"{result.n_fragments} fragments → {n_segments} segments at threshold {threshold:.2f}"
        )

    def _on_threshold(self, value=None) -> None:
        if self.result is None:
            return
        self._show_labels(float(self.threshold.value))
