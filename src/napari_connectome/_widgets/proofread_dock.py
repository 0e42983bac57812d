"""The Proofread dock: merge, split and lock segments with the mouse, journaled, undoable.

The dock opens a segmentation store (``napari-connectome segment`` output, or
one it writes from the Segment dock's result), replays its journal, shows the
segment ids on a ``"<name> proofread"`` labels layer and turns clicks and keys
on that layer into edits (:class:`~._proofread_session.ProofreadController`).
Every edit goes through the session's history, whose journal writes the line
to disk before the edit is reported done; after an edit only the changed box
of the layer is rewritten.

A store whose fragments are larger than
:func:`~._proofread_store.lazy_budget` opens lazily: the fragments stay on
disk and the layer's data is a :class:`~napari_connectome.io.lazy_labels.LazyLabels`
that reads only the planes napari shows; after an edit the layer re-reads its
plane.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QListWidget, QListWidgetItem

from ..io.lazy_labels import LazyLabels
from ._layer_output import LayerOutput
from ._proofread_session import (
    LOCK,
    MERGE,
    MODES,
    NOTE,
    PICK,
    SHORTCUTS,
    SPLIT,
    Outcome,
    ProofreadController,
    first_labelled_voxel,
    is_empty,
)
from ._proofread_store import (
    default_session_path,
    open_session,
    preview_layer,
    result_display,
    seed_points,
    store_display,
    write_session_store,
)
from ._run_controls import RunControls
from ._scope import unwrap_proxy

#: Colours of split parts 1, 2, ... (seeds and preview).
PART_COLORS = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#ff9f0a", "#64d2ff")
SEGMENT_SOURCE = "napari-connectome Segment dock"


class ProofreadDock(Container):
    """Proofread a segmentation: pick, merge, split and lock segments, with undo.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name).

    Attributes
    ----------
    controller : ProofreadController or None
        The open session's modes, selection, seeds and history.
    layer : napari.layers.Labels or None
        The ``"<name> proofread"`` layer.
    key_bindings : dict of str to callable
        Keys bound on the layer (napari key names) and what they call.
    lazy : bool or None
        How the next session opens: True keeps the volumes on disk, False
        reads them into memory, None (the default) decides by their size
        (:func:`~._proofread_store.lazy_budget`).
    """

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self.store = FileEdit(
            label="session",
            mode="d",
            nullable=True,
            tooltip="a segmentation store (OUTPUT.zarr) from `napari-connectome segment`",
        )
        self.controls = RunControls(run_text="Open session")
        self.from_segment = PushButton(text="From Segment dock")
        self.new_store = FileEdit(
            label="new session",
            mode="w",
            filter="*.zarr",
            nullable=True,
            tooltip="where 'From Segment dock' writes the session store (the journal lives in "
            "it); empty: ~/napari-connectome-sessions/<image>-<yyyymmdd-hhmmss>.zarr",
        )
        self.session_path = Label(value="no session open")
        self.mode = ComboBox(label="mode", choices=list(MODES), value=PICK)
        self.merge_button = PushButton(text="Merge")
        self.next_part_button = PushButton(text="Next part")
        self.preview_button = PushButton(text="Preview")
        self.commit_button = PushButton(text="Commit split")
        self.clear_button = PushButton(text="Clear")
        self.undo_button = PushButton(text="Undo")
        self.redo_button = PushButton(text="Redo")
        self.selection = Label(value="")
        self.counts = Label(value="")
        self.shortcuts = Label(value="\n".join(f"{k}: {v}" for k, v in SHORTCUTS))
        self.note = Label(value=NOTE)

        def row(*widgets):
            box = Container(widgets=list(widgets), layout="horizontal", labels=False)
            box.margins = (0, 0, 0, 0)
            return box

        super().__init__(
            widgets=[
                self.store,
                self.controls,
                self.new_store,
                self.from_segment,
                self.session_path,
                self.mode,
                row(self.merge_button, self.clear_button, self.undo_button, self.redo_button),
                row(self.next_part_button, self.preview_button, self.commit_button),
                self.selection,
                self.counts,
                Label(value="History (click a row to go back or forward):"),
            ]
        )
        for label in (self.controls.status, self.session_path, self.selection, self.note):
            label.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        self.history_list = QListWidget()
        self.native.layout().addWidget(self.history_list)
        for widget in (self.shortcuts, self.note):
            self.native.layout().addWidget(widget.native)
        self.controller: ProofreadController | None = None
        self.layer = None
        self.key_bindings: dict = {}
        self.lazy: bool | None = None
        self._lift = False
        self._bound: list = []
        self._output = LayerOutput(napari_viewer)
        self._helpers: dict = {}
        self._shown: tuple = (None, None)
        self.controls.run_button.changed.connect(self.open_store)
        self.from_segment.changed.connect(self.from_segment_dock)
        self.mode.changed.connect(lambda value: self.run_action(lambda c: c.set_mode(value)))
        buttons = {
            self.merge_button: lambda c: c.merge(),
            self.next_part_button: lambda c: c.next_part(),
            self.preview_button: lambda c: c.preview_split(),
            self.commit_button: lambda c: c.commit_split(),
            self.clear_button: lambda c: c.clear(),
            self.undo_button: lambda c: c.undo(),
            self.redo_button: lambda c: c.redo(),
        }
        for button, action in buttons.items():
            button.changed.connect(lambda _=None, a=action: self.run_action(a))
        self.history_list.itemClicked.connect(self._on_history_click)
        self._update_panel()

    @property
    def status(self) -> str:
        """str: The status line."""
        return self.controls.status.value

    # --- opening a session ------------------------------------------------------------

    def open_store(self, path=None) -> None:
        """Open a segmentation store for proofreading (off the GUI thread), replaying its journal.

        Parameters
        ----------
        path : path-like, optional
            The store; the ``session`` field by default.
        """
        path = path if isinstance(path, str | Path) else self.store.value
        if path is None or str(path) in ("", "."):
            self.controls.status.value = "Error: pick a segmentation store (OUTPUT.zarr) first"
            return
        path = Path(path).expanduser()
        self.controls.start(
            lambda: open_session(path, self.lazy),
            self._opened,
            busy_message=f"Opening {path.name}...",
        )

    def from_segment_dock(self, _=None) -> None:
        """Start a session from the Segment dock's last result (written to a new store first)."""
        try:
            result, threshold, display = self._segment_source()
        except ValueError as error:
            self.controls.status.value = f"Error: {error}"
            return
        self.start_from_result(result, threshold, **display)

    def start_from_result(
        self,
        result,
        threshold=None,
        *,
        name="segmentation",
        scale=None,
        translate=None,
        lift=False,
        path=None,
    ) -> None:
        """Write an in-memory result to a new session store, then open it.

        Parameters
        ----------
        result : SegmentationResult
            Segmentation state (the Segment dock's ``result``).
        threshold : float, optional
            Threshold of the starting segmentation; the result's by default.
        name : str, optional
            Image name: the layer is ``"<name> proofread"``.
        scale, translate : sequence of float, optional
            Placement of the layers (the voxel size and the origin by default).
        lift : bool, optional
            Show a 2D result as one section of a 3D image.
        path : path-like, optional
            Store to write; the ``new session`` field, else
            :func:`~._proofread_session.default_session_path`.
        """
        threshold = float(result.threshold if threshold is None else threshold)
        path = path or self.new_store.value
        if path is None or str(path) in ("", "."):
            path = default_session_path(name)
        path = Path(path).expanduser()
        if path.exists():
            self.controls.status.value = f"Error: {path} exists; open it, or pick a new path"
            return
        display = result_display(result, name, scale, translate, lift)

        def work():
            try:
                write_session_store(result, path, threshold, display)
            except OSError as error:
                raise ValueError(str(error)) from error
            return open_session(path, self.lazy)

        self.controls.start(work, self._opened, busy_message=f"Writing {path.name}...")

    def _segment_source(self) -> tuple:
        """Find the Segment dock's result and its segmentation layer (raise ValueError)."""
        from napari.layers import Labels

        from .segment_dock import SegmentDock

        docks = [unwrap_proxy(w) for w in self._viewer.window.dock_widgets.values()]
        segment = next((d for d in docks if isinstance(d, SegmentDock)), None)
        if segment is None or segment.result is None:
            raise ValueError("the Segment dock has no result yet: segment an image first")
        result, threshold = segment.result, float(segment.threshold.value)
        shape = result.fragments.shape
        for layer in map(unwrap_proxy, reversed(list(self._viewer.layers))):
            if (
                isinstance(layer, Labels)
                and layer.metadata.get("source") == SEGMENT_SOURCE
                and layer.data.shape in (shape, (1, *shape))
            ):
                name = layer.name.removesuffix(" segmentation")
                place = {"scale": tuple(layer.scale), "translate": tuple(layer.translate)}
                return result, threshold, {"name": name, "lift": layer.ndim > len(shape), **place}
        return result, threshold, {"name": "segmentation"}

    def _opened(self, opened) -> None:
        session, attrs = opened
        if self.controller is not None:
            self.controller.session.close()
        self.controller = ProofreadController(session)
        self.controller.set_mode(self.mode.value)
        place = store_display(attrs, session.store, session.state.ndim)
        self._lift, self._shown = place.pop("lift"), (None, None)
        place["name"] = f"{place['name']} proofread"
        place["metadata"] = {
            "source": "napari-connectome Proofread dock",
            "store": str(session.store),
        }
        if isinstance(session.state.fragments, np.ndarray):
            labels = session.state.labels_in(None)  # the whole volume once, at opening
            labels = labels[None] if self._lift else labels
        else:  # on disk: napari reads the planes it shows, box by box
            labels = LazyLabels(session.state, lift=self._lift)
        self.layer = unwrap_proxy(self._output.put(labels, place, "labels"))
        self._bind(self.layer)
        self.layer.mode = "pan_zoom"
        self._viewer.layers.selection.active = self.layer
        self.session_path.value = f"session: {session.store}"
        on_disk = "" if isinstance(labels, np.ndarray) else " (read from disk as shown)"
        self.controls.status.value = (
            f"Opened {session.store.name}{on_disk}: {len(session.history)} journaled edits "
            "replayed."
        )
        self._update_panel()

    def _bind(self, layer) -> None:
        if any(layer is b for b in self._bound):
            return
        self._bound.append(layer)
        layer.mouse_drag_callbacks.append(self._on_mouse)
        layer.events.paint.connect(self._on_paint)
        keys = {
            "Control-Z": lambda c: c.undo(),
            "Control-Shift-Z": lambda c: c.redo(),
            "Enter": lambda c: c.commit(),
            "Escape": lambda c: c.clear(),
        }
        for key, mode in (("P", PICK), ("M", MERGE), ("S", SPLIT), ("L", LOCK)):
            keys[key] = lambda c, m=mode: self._set_mode(m)
        for k in range(1, 10):
            keys[str(k)] = lambda c, p=k - 1: c.select_part(p)
        for key, action in keys.items():
            self.key_bindings[key] = action
            layer.bind_key(key, lambda _layer, a=action: self.run_action(a), overwrite=True)

    # --- actions -----------------------------------------------------------------------

    def _set_mode(self, mode: str) -> Outcome:
        self.mode.value = mode  # its changed signal tells the controller
        return Outcome(f"{mode} mode")

    def run_action(self, action) -> Outcome:
        """Run ``action(controller) -> Outcome`` and show the outcome (buttons and keys call this).

        Returns
        -------
        Outcome
            What happened (an error outcome when no session is open).
        """
        if self.controller is None:
            return self._apply(Outcome("Error: open a session first", None, True))
        return self._apply(action(self.controller))

    def click(self, position, shift: bool = False) -> Outcome:
        """Handle a click at a voxel (data coordinates of the proofread layer), Shift held or not.

        The mouse callback calls this with the voxel under the cursor; see
        :meth:`ProofreadController.click` for what a click does in each mode.

        Returns
        -------
        Outcome
            What happened.
        """
        position = tuple(int(round(float(c))) for c in position)
        if self._lift:
            if position[0] != 0:
                return self._apply(Outcome("Error: the click is outside the volume", None, True))
            position = position[1:]
        return self.run_action(lambda c: c.click(position, shift))

    def go_to(self, done: int) -> Outcome:
        """Undo or redo until ``done`` edits are done (what a history row click does)."""
        return self.run_action(lambda c: c.go_to(done))

    def _on_mouse(self, layer, event) -> None:
        if event.type != "mouse_press" or getattr(event, "button", 1) != 1:
            return
        if self.controller is None:
            return
        shift = any(m == "Shift" for m in event.modifiers)
        displayed = list(getattr(event, "dims_displayed", self._viewer.dims.displayed))
        if len(displayed) == 3:
            start, end = layer.get_ray_intersections(
                event.position, event.view_direction, displayed, world=True
            )
            voxel = first_labelled_voxel(layer.data, start, end)
            if voxel is None:
                self._apply(Outcome("Error: there is no segment there (background)", None, True))
                return
        else:
            voxel = layer.world_to_data(event.position)
        self.click(voxel, shift)

    def _on_history_click(self, item) -> None:
        self.go_to(int(item.data(Qt.ItemDataRole.UserRole)))

    def _on_paint(self, _event=None) -> None:
        self.controls.status.value = (
            "Warning: napari's paint/fill/erase changed the proofread layer; that change is "
            "not journaled (use merge and split)."
        )

    # --- showing outcomes --------------------------------------------------------------

    def _apply(self, outcome: Outcome) -> Outcome:
        if not is_empty(outcome.box) and self.layer is not None:
            self._refresh(outcome.box)
        self.controls.status.value = outcome.message
        self._update_panel()
        return outcome

    def _refresh(self, box) -> None:
        """Rewrite the layer's labels in one box (state coordinates) and redraw."""
        if isinstance(self.layer.data, LazyLabels):  # read again: napari re-slices
            self.layer.refresh()
            return
        labels = self.controller.state.labels_in(box)
        if self._lift:
            box, labels = (slice(0, 1), *box), labels[None]
        self.layer.data[tuple(box)] = labels
        self.layer.refresh()

    def _update_panel(self) -> None:
        c = self.controller
        self.clear_button.enabled = c is not None
        self.merge_button.enabled = c is not None and c.mode == MERGE
        for button in (self.next_part_button, self.preview_button, self.commit_button):
            button.enabled = c is not None and c.mode == SPLIT
        self.undo_button.enabled = c is not None and c.history.can_undo
        self.redo_button.enabled = c is not None and c.history.can_redo
        if c is None:
            return
        self.selection.value = c.selection_text()
        seq, preview = c.session.journal.next_seq, c.preview
        if seq != self._shown[0] or preview is not self._shown[1]:  # an edit or a new preview
            self._shown = (seq, preview)
            self.counts.value = c.counts()
            self._update_history()
            self._update_preview()
        self._update_seeds()

    def _update_history(self) -> None:
        self.history_list.clear()
        for index, (text, done) in enumerate(self.controller.rows()):
            item = QListWidgetItem(text)
            item.setData(Qt.ItemDataRole.UserRole, index)
            if not done:
                item.setForeground(QBrush(QColor("gray")))
            self.history_list.addItem(item)
        self.history_list.scrollToBottom()

    def _helper_layer(self, name: str):
        """Return the seeds or preview layer this dock made under ``name``, or None."""
        layer = self._helpers.get(name)
        if layer is not None and layer in self._viewer.layers and layer.name == name:
            return layer
        return None

    def _put_helper(self, name, data, kwargs, layer_type):
        layer = self._helper_layer(name)
        if layer is not None:
            layer.data = data
            for key, value in kwargs.items():
                setattr(layer, key, value)
            return layer
        layer = unwrap_proxy(getattr(self._viewer, f"add_{layer_type}")(data, name=name, **kwargs))
        self._helpers[name] = layer
        self._viewer.layers.selection.active = self.layer  # clicks go to the proofread layer
        return layer

    def _drop_helper(self, name: str) -> None:
        layer = self._helper_layer(name)
        if layer is not None:
            self._viewer.layers.remove(layer)

    def _update_seeds(self) -> None:
        coords, colors = seed_points(self.controller.seeds, self._lift, PART_COLORS)
        if not len(coords):
            return self._drop_helper("split seeds")
        place = {"scale": self.layer.scale, "translate": self.layer.translate, "size": 6}
        layer = self._put_helper("split seeds", coords, place, "points")
        layer.face_color, layer.border_color = colors, "white"

    def _update_preview(self) -> None:
        preview = self.controller.preview
        if preview is None:
            return self._drop_helper("split preview")
        from napari.utils.colormaps import DirectLabelColormap

        parts, translate = preview_layer(
            preview, self._lift, self.layer.scale, self.layer.translate
        )
        colors = {None: "transparent", 0: "transparent"}
        colors.update(
            {g + 1: PART_COLORS[g % len(PART_COLORS)] for g in range(len(preview.parts))}
        )
        place = {"scale": self.layer.scale, "translate": translate, "opacity": 0.8}
        place["colormap"] = DirectLabelColormap(color_dict=colors)
        self._put_helper("split preview", parts, place, "labels")
        seeds = self._helper_layer("split seeds")
        if seeds is not None:  # seeds stay on top of the preview
            layers = self._viewer.layers
            layers.move(layers.index(seeds), len(layers))
