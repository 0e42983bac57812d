"""The Synapses dock: detect synapses in an EM image, their partners, and the connectome.

The dock reads the chosen region of the image layer and of the segmentation
layer (in the worker thread), runs
:func:`napari_connectome.synapse_detection.detect_volume` off the GUI thread
with progress and cancel, and shows:

- ``"<image> synapses"``: a Points layer, one point per synapse, coloured by
  confidence (viridis, 0 to 1);
- ``"<image> synapse partners"``: a Vectors layer, one arrow per (synapse,
  postsynaptic partner) from the presynaptic side to the postsynaptic side;
- a sortable table (click a row: the camera jumps there), a confidence
  threshold filtering all of them, the connectome counts and a connectivity
  matrix (a heat map table, see :mod:`._synapse_tables`) of chosen neurons.

Partners follow the segmentation without any model run: when the segmentation
layer's data is replaced (the Segment dock's threshold slider), and, when the
segmentation layer is a Proofread dock's ``"<name> proofread"`` layer, after
every merge, split, undo and redo of its session (:class:`~._synapse_view.ProofreadLink`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
)

from ..core.connectome import connectome_matrix
from ..synapse_detection import DETECTION_DEFAULTS, synapse_count
from ._model_choice import ModelChoice
from ._run_controls import RunControls
from ._scope import (
    REGION_IN_VIEW,
    SCOPES,
    describe_region,
    level0,
    parse_voxel_size,
    read_region,
    region_problem,
    scope_region,
    unwrap_proxy,
    voxel_size_text,
)
from ._synapse_follow import FollowSegmentation
from ._synapse_layers import SOURCE, SynapseLayers
from ._synapse_tables import ConnectivityMatrix, SynapseTableWidget
from ._synapse_view import (
    ProofreadLink,
    covered_region,
    filtered_edges,
    grid_offset,
    parse_neurons,
    rows_above,
    shifted,
    top_neurons,
)

__all__ = ["SynapseDock"]


class SynapseDock(FollowSegmentation, SynapseLayers, Container):
    """Detect synapses, assign partners from a segmentation, show the connectome.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name).

    Attributes
    ----------
    result : SynapseResult or None
        The last run (detections, maps and the partner table).
    rows : numpy.ndarray
        The table rows shown (above the confidence threshold).
    edges : numpy.ndarray
        The connectome of those rows: ``(pre, post, count)``.
    custom_model : tuple or None
        A ``(torch.nn.Module, config)`` synapse network used instead of the
        model chosen in the dock (scripting and tests).
    link : ProofreadLink or None
        The proofreading session the partners follow, if any.
    """

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self.image = ComboBox(label="image", choices=self._image_choices, nullable=True)
        self.segmentation = ComboBox(
            label="segmentation",
            choices=self._labels_choices,
            nullable=True,
            tooltip="segment ids of this image; pick a '... proofread' layer to follow edits",
        )
        self._model_choice = ModelChoice()
        self.model = self._model_choice.model
        self.model_file = self._model_choice.model_file
        self.device = self._model_choice.device
        self.scope = ComboBox(label="scope", choices=list(SCOPES), value=REGION_IN_VIEW)
        self.voxel_size = LineEdit(label="voxel size (nm)", tooltip="z, y, x or y, x in nm")
        self.probability = FloatSpinBox(
            label="probability threshold",
            min=0.05,
            max=0.95,
            step=0.05,
            value=DETECTION_DEFAULTS["threshold"],
            tooltip=(
                "synapse probability from which a voxel belongs to a synapse (an object"
                " must also reach the peak threshold)"
            ),
        )
        self.peak_probability = FloatSpinBox(
            label="peak threshold",
            min=0.05,
            max=1.0,
            step=0.01,
            value=DETECTION_DEFAULTS["peak_threshold"],
            tooltip=(
                "an object is kept only where its probability reaches this somewhere: lower"
                " it when clear synapses are missed, raise it against false detections"
            ),
        )
        self.min_size = FloatSpinBox(
            label="size floor (nm³)",
            min=0.0,
            max=1e9,
            step=5e4,
            value=DETECTION_DEFAULTS["min_size_nm3"],
            tooltip=(
                "smaller synapse objects are dropped (one section counts as thick as its "
                "voxels, a 2D image as a 50 nm section)"
            ),
        )
        self.controls = RunControls(run_text="Detect synapses")
        self.threshold = FloatSlider(
            label="min confidence",
            min=0.0,
            max=1.0,
            step=0.01,
            value=0.0,
            tracking=False,
            tooltip="hide synapses below this confidence (points, arrows, table, connectome)",
        )
        self.summary = Label(value="")
        self.neurons = LineEdit(
            label="matrix neurons",
            tooltip="segment ids, e.g. '12, 40, 7'; empty: the 10 most connected",
        )
        self.from_rows = PushButton(text="Matrix of the selected rows' neurons")
        self.csv = FileEdit(
            label="save as",
            mode="w",
            filter="*.csv",
            nullable=True,
            tooltip="NAME.csv: writes NAME_synapses.csv and NAME_connectome.csv (shown rows)",
        )
        self.save_button = PushButton(text="Save CSV (synapses, connectome)")
        super().__init__(
            widgets=[
                self.image,
                self.segmentation,
                self.model,
                self.model_file,
                self.device,
                self.scope,
                self.voxel_size,
                self.probability,
                self.peak_probability,
                self.min_size,
                self.controls,
                self.threshold,
                self.summary,
                self.neurons,
                self.from_rows,
            ]
        )
        saving = Container(widgets=[self.csv, self.save_button])
        saving.margins = (0, 0, 0, 0)
        for label in (self.controls.status, self.summary):
            label.native.setWordWrap(True)
        self.table = SynapseTableWidget(self.jump_to)
        self.matrix = ConnectivityMatrix()
        self.native.layout().addWidget(self.table)
        self.native.layout().addWidget(Label(value="Connectivity (row → column):").native)
        self.native.layout().addWidget(self.matrix)
        self.native.layout().addWidget(saving.native)
        self.save_button.changed.connect(lambda _=None: self.save_csv())
        self.from_rows.changed.connect(lambda _=None: self.neurons_from_selection())
        self.result = None
        self.custom_model = None
        self.link: ProofreadLink | None = None
        self.rows = np.zeros(0)
        self.edges = np.zeros(0)
        self._ctx: dict = {}
        self._pixels = np.zeros((0, 3))
        self._rows_nm = np.zeros((0, 3))
        self._watched: list = []
        self._arrow_cache = None
        self._arrows_due = False
        self._made: dict = {}  # name -> layer this dock made (replaced on re-run)
        self._choosing = False  # True while the dock itself sets its boxes (_setting_box)
        self.controls.run_button.changed.connect(self.run)
        self.image.changed.connect(self._on_image)
        self.segmentation.changed.connect(self._on_segmentation_choice)
        self.threshold.changed.connect(lambda _=None: self.refresh())
        self.neurons.changed.connect(lambda _=None: self._show_matrix())
        for event in ("inserted", "removed", "moved"):
            getattr(napari_viewer.layers.events, event).connect(self._on_layers_changed)
        self._on_layers_changed()

    # --- layer choice -------------------------------------------------------------------

    def _layers(self, kind: str) -> list:
        from napari.layers import Image, Labels

        cls = {"image": Image, "labels": Labels}[kind]
        viewer = getattr(self, "_viewer", None)
        if viewer is None:
            return []
        return [unwrap_proxy(layer) for layer in viewer.layers if isinstance(layer, cls)]

    def _image_choices(self, _widget=None) -> list:
        return [(layer.name, layer) for layer in self._layers("image")]

    def _labels_choices(self, _widget=None) -> list:
        return [(layer.name, layer) for layer in self._segmentations()]

    def _segmentations(self) -> list:
        """Labels layers that can be a segmentation (not this dock's synapse objects)."""
        return [
            layer
            for layer in self._layers("labels")
            if getattr(layer, "metadata", {}).get("source") != SOURCE
        ]

    def _on_layers_changed(self, _event=None) -> None:
        with self._setting_box():  # a box that changes with the layer list re-links nothing
            self.reset_choices()
            images, labels = self._layers("image"), self._segmentations()
            if self.image.value is None and images:
                self.image.value = images[-1]
            if self.segmentation.value is None and labels:
                self.segmentation.value = labels[-1]
        if not self.voxel_size.value:
            self._on_image()
        used = self._ctx.get("labels") if self._table() is not None else None
        if used is not None and used not in self._viewer.layers:
            self.controls.status.value = (
                f"The segmentation '{used.name}' was removed: the partners stay as they "
                "were; choose a segmentation to read them from it."
            )

    def _on_image(self, _value=None) -> None:
        """Show the chosen image's voxel size (its scale, or its metadata)."""
        layer = self.image.value
        if layer is None:
            return
        self.voxel_size.value = voxel_size_text(layer)

    # --- running ------------------------------------------------------------------------

    def run(self) -> None:
        """Check the controls, then detect synapses and partners off the GUI thread."""
        try:
            ctx = self._prepare()
        except ValueError as error:
            self.controls.status.value = f"Error: {error}"
            return
        from ..synapse_detection import detect_volume

        image, labels, region = ctx["image"], ctx["labels"], ctx["region"]
        labels_region = shifted(region, ctx["offset"])
        model, device, voxel_size = ctx["model"], ctx["device"], ctx["run_voxel_size"]
        settings = {
            "threshold": ctx["probability"],
            "peak_threshold": ctx["peak_probability"],
            "min_size_nm3": ctx["min_size"],
            "section_nm": ctx["section_nm"],
        }

        def work(report, should_stop):
            report(0.0, "Reading the image and the segmentation...")
            volume = read_region(level0(image), region)
            segmentation = read_region(level0(labels), labels_region)
            return detect_volume(
                volume,
                voxel_size,
                segmentation=segmentation,
                model=model,
                device=device,
                **settings,
                progress=lambda f, message: report(f, message.capitalize()),
                should_stop=should_stop,
            )

        self.controls.start(
            work,
            lambda result: self._show(result, ctx),
            busy_message=f"Detecting synapses in {ctx['where']} of '{image.name}'...",
            progress=True,
        )

    def _prepare(self) -> dict:
        """Read and check the controls; raise ValueError with a message for the user."""
        image, labels = self.image.value, self.segmentation.value
        if image is None or image not in self._viewer.layers:
            raise ValueError("no image layer: open an EM image (or File > Open Sample) first")
        if image.rgb or image.ndim not in (2, 3):
            raise ValueError(f"'{image.name}' is not a grey 2D or 3D image; pick an EM image")
        if labels is None or labels not in self._viewer.layers:
            raise ValueError(
                "no segmentation layer: partners need one; segment the image first (Segment "
                "dock) or open its segmentation as a labels layer"
            )
        offset = grid_offset(image, labels)
        voxel_size = parse_voxel_size(self.voxel_size.value, image.ndim)
        device = self._model_choice.chosen_device()
        model = self._chosen_model()
        shape = tuple(int(n) for n in level0(image).shape)
        region = scope_region(self._viewer, image, self.scope.value)
        problem = region_problem(region)
        if problem:
            raise ValueError(problem)
        region = covered_region(region, shape, offset, level0(labels).shape)
        problem = region_problem(region)
        if problem:
            raise ValueError(f"{problem} (the part the segmentation covers)")
        run_voxel_size = voxel_size[-2:] if region.plane or image.ndim == 2 else voxel_size
        # one section of a 3D image is as thick as its voxels; a 2D image: SECTION_NM
        section_nm = float(voxel_size[0]) if region.plane else None
        return {
            "image": image,
            "labels": labels,
            "offset": offset,
            "region": region,
            "voxel_size": voxel_size,
            "run_voxel_size": run_voxel_size,
            "model": model,
            "device": device,
            "probability": float(self.probability.value),
            "peak_probability": float(self.peak_probability.value),
            "min_size": float(self.min_size.value),
            "section_nm": section_nm,
            "where": describe_region(region, shape),
        }

    def _chosen_model(self):
        if self.custom_model is not None:
            return self.custom_model
        from ..models.synapse_inference import bundled_synapse_model_path

        return self._model_choice.chosen_model(
            bundled_synapse_model_path,
            "the bundled synapse model is not installed; pick a model file "
            "(synapse_unet.safetensors from 'napari-connectome train')",
            "synapse model",
        )

    # --- results (GUI thread) -------------------------------------------------------------

    def _show(self, result, ctx: dict) -> None:
        from ..synapse_detection import no_synapses_message

        if self.link is not None:
            self.link.detach()
            self.link = None
        self.result, self._ctx = result, ctx
        labels = ctx["labels"]
        self._watch(labels)
        if len(result) == 0:
            self.refresh()
            self.controls.status.value = f"Error: {no_synapses_message(result)}"
            return
        self._follow()
        self.refresh()
        follow = (
            f"; partners follow the proofreading session of '{labels.name}'"
            if self.link is not None
            else ""
        )
        lonely = (
            " No connections: no synapse lies between two segmented neurons (is the "
            "segmentation empty, or one segment?)."
            if not len(result.table.pairs)
            else ""
        )
        self.controls.status.value = (
            f"Done: {synapse_count(len(result))} in {ctx['where']} of '{ctx['image'].name}'; "
            f"partners from '{labels.name}'{follow}.{lonely}"
        )

    def _table(self):
        return None if self.result is None else self.result.table

    def refresh(self, points: bool = True, arrows_later: bool = False) -> None:
        """Redraw points, table, counts, matrix and arrows from the table and the threshold.

        Parameters
        ----------
        points : bool
            Also redraw the points (not needed after a proofreading edit: synapses
            keep their place and confidence, only their partners change).
        arrows_later : bool
            Redraw the arrows once the event loop is free (after a proofreading
            edit: the table and connectome show first).
        """
        if self.result is None:
            return
        threshold = float(self.threshold.value)
        det = self.result.detections
        ids, conf = np.asarray(det.ids), np.asarray(det.confidence)
        keep = conf >= threshold
        if points or len(self._pixels) != len(ids):
            self._show_objects(conf, keep)  # below the points
            self._show_points(ids, conf, keep)
        self._show_table(ids, conf, keep, threshold)  # the table and connectome first
        if not arrows_later:
            self._show_arrows(ids, keep)
        elif not self._arrows_due:
            from qtpy.QtCore import QTimer

            self._arrows_due = True
            QTimer.singleShot(0, self._deferred_arrows)

    def _show_table(self, ids, conf, keep, threshold: float) -> None:
        table = self._table()
        if table is None:
            rows = np.zeros(0, [("id", np.uint32), ("pre", np.uint64), ("post", np.uint64)])
        else:
            rows = rows_above(table.rows(), ids, conf, threshold)
        self.rows = rows
        self.edges = filtered_edges(rows) if table is not None else np.zeros(0)
        index = np.searchsorted(ids, rows["id"]) if len(rows) else np.zeros(0, int)
        nm = self._pixels[index] * np.asarray(self._ctx["voxel_size"], float)
        if nm.shape[1] == 2:
            nm = np.concatenate([np.zeros((len(nm), 1)), nm], axis=1)
        self.table.set_rows(rows, nm, conf[index])
        self._rows_nm = nm
        neurons = {int(n) for n in rows["pre"]} | {int(n) for n in rows["post"]}
        neurons.discard(0)
        self.summary.value = (
            f"{int(keep.sum())} of {len(ids)} synapses at confidence ≥ {threshold:.2f}; "
            f"{len(neurons)} neurons, {len(self.edges)} connections, "
            f"{int(self.edges['count'].sum()) if len(self.edges) else 0} synaptic contacts"
        )
        if self.link is not None and self.link.error:
            self.summary.value += f"\nWarning: {self.link.error}"
        self._show_matrix()

    def _show_matrix(self) -> None:
        if self.result is None or not len(self.edges):
            self.matrix.set_matrix([], np.zeros((0, 0), np.int64))
            return
        try:
            neurons = parse_neurons(self.neurons.value) or top_neurons(self.edges)
        except ValueError as error:
            self.controls.status.value = f"Error: {error}"
            return
        self.matrix.set_matrix(neurons, connectome_matrix(self.edges, neurons))
        connected = {int(n) for n in self.edges["pre"]} | {int(n) for n in self.edges["post"]}
        unknown = [n for n in neurons if n not in connected]
        if unknown:
            self.controls.status.value = (
                f"No connection shown has neuron(s) {', '.join(map(str, unknown))}: check the "
                "ids, or lower the confidence threshold."
            )

    def neurons_from_selection(self) -> list[int]:
        """Show the matrix of the neurons (pre and post) of the selected table rows.

        Returns
        -------
        list of int
            The neurons, now in the ``matrix neurons`` field (unchanged when no row
            is selected).
        """
        selected = self.table.selectionModel().selectedRows()
        picked = [self.table.row_index(index.row()) for index in selected]
        neurons: list[int] = []
        for index in sorted(picked):
            for n in (int(self.rows["pre"][index]), int(self.rows["post"][index])):
                if n and n not in neurons:
                    neurons.append(n)
        if neurons:
            self.neurons.value = ", ".join(map(str, neurons))
        else:
            self.controls.status.value = "Error: select table rows first (Ctrl-click for several)"
        return neurons

    def save_csv(self, path=None) -> tuple | None:
        """Write the shown synapse rows and their connectome as CSV files.

        Parameters
        ----------
        path : path-like, optional
            ``NAME.csv``; the ``save as`` field by default. Writes
            ``NAME_synapses.csv`` (``id,z,y,x,pre,post,confidence,partner_confidence``,
            nm from the image's first voxel) and ``NAME_connectome.csv`` (``pre,post,count``).

        Returns
        -------
        tuple of pathlib.Path or None
            The two files; None when nothing was written (the status says why).
        """
        from ..core.connectome import write_edges_csv, write_synapse_csv

        path = self.csv.value if path is None else path
        if self.result is None or self._table() is None:
            self.controls.status.value = "Error: nothing to save: detect synapses first"
            return None
        if path is None or str(path) in ("", "."):
            self.controls.status.value = "Error: choose where to save (the 'save as' field)"
            return None
        stem = Path(path).expanduser().with_suffix("")
        rows = self.rows.copy()
        rows["z"], rows["y"], rows["x"] = self._rows_nm.T
        try:
            files = (
                write_synapse_csv(stem.with_name(stem.name + "_synapses.csv"), rows),
                write_edges_csv(stem.with_name(stem.name + "_connectome.csv"), self.edges),
            )
        except OSError as error:
            self.controls.status.value = f"Error: cannot write {stem}: {error}"
            return None
        self.controls.status.value = f"Saved {files[0].name} and {files[1].name}."
        return files

    def jump_to(self, index: int) -> None:
        """Centre the camera on the synapse of a shown table row.

        Parameters
        ----------
        index : int
            Index into :attr:`rows`.
        """
        if not 0 <= index < len(self.rows):
            return
        ids = np.asarray(self.result.detections.ids)
        pixel = self._pixels[int(np.searchsorted(ids, self.rows["id"][index]))]
        image = self._ctx["image"]
        world = np.asarray(image.translate, float) + pixel * np.asarray(image.scale, float)
        dims = self._viewer.dims
        axes = list(range(dims.ndim - world.size, dims.ndim))
        dims.set_point(axes, tuple(float(w) for w in world))
        point = np.asarray(dims.point, float)
        point[axes] = world  # the dims snap to their steps; the camera need not
        self._viewer.camera.center = tuple(float(point[d]) for d in dims.displayed)
        row = self.rows[index]
        self.controls.status.value = (
            f"synapse {int(row['id'])}: {int(row['pre'])} → {int(row['post'])}"
        )
