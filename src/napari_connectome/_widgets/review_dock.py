"""The Review dock: the ranked queue of likely errors, one key per answer.

The dock reviews the session the Proofread dock has open (it opens one there
when needed): the candidate errors of the segmentation
(:class:`~napari_connectome.core.review_queue.ReviewQueue`) are listed best
first; **Next** (N) centres the camera on the next one, outlines the segments
involved as they are, dims the rest and fills in the suggested fix (one
``review item`` layer); **Accept** (G) applies the fix through the Proofread
dock (journaled, Ctrl+Z undoes it), **Reject** (W) marks the place correct,
**Skip** (K) puts it aside.
Every answer teaches the scorer, which re-ranks the queue every N answers or
on **Retrain**.  Statuses persist beside the journal
(:func:`~._review_session.review_path`).  Showing an item reads only the
labels in its box (:func:`~._review_session.view_box`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox

from ._proofread_session import Outcome
from ._review_layers import BoxVolume, in_plane_outline
from ._review_session import KIND_NAMES, ReviewSession, view_box
from ._review_table import ReviewTableModel, make_table
from ._run_controls import RunControls
from ._scope import unwrap_proxy

#: Keys bound on the viewer while the dock is open, and what they do.
KEYS = (("N", "next item"), ("G", "accept the fix"), ("W", "reject (correct)"), ("K", "skip"))
#: The layer an item is drawn on: the suggested fix filled (1 and 2 for the sides of
#: a split, 1 for both segments of a merge), the segments as they are now outlined (3).
ITEM_LAYER = "review item"
OUTLINE = 3
#: Opacity of the proofread layer while an item is shown (the rest dimmed).
DIM = 0.25
_ITEM_COLORS = {
    None: "transparent",
    0: "transparent",
    1: (1.0, 0.62, 0.04, 0.45),
    2: (0.04, 0.52, 1.0, 0.45),
    OUTLINE: (1.0, 1.0, 1.0, 1.0),
}
_ALL = "all kinds"
_POLL_MS = 50


def _store_threshold(store) -> float:
    import zarr

    return float(zarr.open_group(str(store), mode="r").attrs.get("threshold", 0.5))


class ReviewDock(Container):
    """Review ranked candidate errors of the Proofread dock's session, one key per answer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name).

    Attributes
    ----------
    review : ReviewSession or None
        The queue, its statuses and the item on screen.
    proofread : ProofreadDock or None
        The dock whose session is reviewed (its layer, history and journal).
    key_bindings : dict of str to callable
        Keys bound on the viewer (napari key names) and what they call.
    """

    def __init__(self, napari_viewer) -> None:
        self._viewer = unwrap_proxy(napari_viewer)
        self.store = FileEdit(
            label="session",
            mode="d",
            nullable=True,
            tooltip="a segmentation store (OUTPUT.zarr); empty: the Proofread dock's open session",
        )
        self.controls = RunControls(run_text="Start review")
        self.kind = ComboBox(label="kinds", choices=[_ALL, *KIND_NAMES.values()], value=_ALL)
        self.next_button = PushButton(text="Next (N)")
        self.accept_button = PushButton(text="Accept (G)")
        self.reject_button = PushButton(text="Reject (W)")
        self.skip_button = PushButton(text="Skip (K)")
        self.advance = CheckBox(text="show the next item after each answer", value=True)
        self.retrain_button = PushButton(text="Retrain")
        self.retrain_every = SpinBox(label="retrain every", value=20, min=0, max=10000)
        self.item = Label(value="no item")
        self.progress = Label(value="")
        self.shortcuts = Label(value="keys: " + ", ".join(f"{k} {v}" for k, v in KEYS))

        def row(*widgets):
            box = Container(widgets=list(widgets), layout="horizontal", labels=False)
            box.margins = (0, 0, 0, 0)
            return box

        super().__init__(
            widgets=[
                self.store,
                self.controls,
                self.kind,
                row(self.next_button, self.accept_button, self.reject_button, self.skip_button),
                self.advance,
                row(self.retrain_button, self.retrain_every),
                self.item,
                self.progress,
            ]
        )
        for label in (self.controls.status, self.item, self.progress, self.shortcuts):
            label.native.setWordWrap(True)
        self.model = ReviewTableModel()
        self.table = make_table(self.model)
        self.native.layout().addWidget(self.table)
        self.native.layout().addWidget(self.shortcuts.native)
        self.review: ReviewSession | None = None
        self.proofread = None
        self.key_bindings: dict = {}
        self._unbound: dict = {}
        self._layers: dict = {}
        self._opacity: float | None = None
        self._timer = None
        self._shown = None
        self._panel_queued = False
        self.controls.run_button.changed.connect(self.start)
        actions = {
            self.next_button: self.next_item,
            self.accept_button: self.accept,
            self.reject_button: self.reject,
            self.skip_button: self.skip,
            self.retrain_button: self.retrain,
        }
        for button, action in actions.items():
            button.changed.connect(lambda _=None, a=action: a())
        self.kind.changed.connect(self._on_kind)
        self.retrain_every.changed.connect(self._on_every)
        self.table.clicked.connect(self._on_row_click)
        self._bind_keys()
        self.native.destroyed.connect(_on_gone(self))
        self._update_panel()

    @property
    def status(self) -> str:
        """str: The status line."""
        return self.controls.status.value

    # --- keys --------------------------------------------------------------------------

    def _bind_keys(self) -> None:
        actions = (self.next_item, self.accept, self.reject, self.skip)
        actions = dict(zip("NGWK", actions, strict=True))
        for key, action in actions.items():
            self.key_bindings[key] = action
            old = self._viewer.bind_key(key, lambda _viewer, a=action: a(), overwrite=True)
            self._unbound[key] = old

    def unbind_keys(self) -> None:
        """Give the review keys back (to what they did before the dock was opened)."""
        _unbinder(self._viewer, self._unbound)()
        self.key_bindings.clear()

    # --- starting ----------------------------------------------------------------------

    def _proofread_dock(self):
        from .proofread_dock import ProofreadDock

        docks = [unwrap_proxy(w) for w in self._viewer.window.dock_widgets.values()]
        return next((d for d in docks if isinstance(d, ProofreadDock)), None)

    def start(self, _=None) -> None:
        """Start reviewing the Proofread dock's session, or the ``session`` store opened there."""
        path = self.store.value
        path = None if path is None or str(path) in ("", ".") else Path(path).expanduser()
        proof = self._proofread_dock()
        session = None if proof is None or proof.controller is None else proof.controller.session
        if session is not None and (path is None or _same(session.store, path)):
            return self._attach(proof)
        if path is None:
            self._say(
                "Error: no segmentation store is open: open one in the Proofread dock or pick "
                "it here (no store yet? segment the image first: Segment dock, then 'From "
                "Segment dock' in the Proofread dock, or `napari-connectome segment RAW OUT.zarr`)"
            )
            return None
        if not path.exists():
            self._say(f"Error: there is no segmentation store at {path}: run Segment first")
            return None
        if proof is None:
            _, proof = self._viewer.window.add_plugin_dock_widget("napari-connectome", "Proofread")
            proof = unwrap_proxy(proof)
        proof.open_store(path)
        self._say(f"Opening {path.name} in the Proofread dock...")
        self._wait_for(proof, path)
        return None

    def _wait_for(self, proof, path: Path) -> None:
        from qtpy.QtCore import QTimer

        def check():
            if proof.controls.worker is not None:
                return
            self._timer.stop()
            c = proof.controller
            if c is not None and _same(c.session.store, path):
                self._attach(proof)
            else:
                self._say(
                    f"Error: cannot review {path}: {proof.status.removeprefix('Error: ')}. A "
                    "review needs a segmentation store with a region graph: segment the image "
                    "first (Segment dock, or `napari-connectome segment RAW OUT.zarr`)"
                )

        if self._timer is not None:
            self._timer.stop()
        self._timer = QTimer()
        self._timer.setInterval(_POLL_MS)
        self._timer.timeout.connect(check)
        self._timer.start()

    def _attach(self, proof) -> None:
        self.stop()
        self.proofread = proof
        session = proof.controller.session
        every = int(self.retrain_every.value)
        seq = session.journal.next_seq

        def work():
            try:
                threshold = _store_threshold(session.store)
            except Exception as error:  # noqa: BLE001 - any unreadable store
                raise ValueError(f"cannot read {session.store}: {error}") from error
            return ReviewSession.build(session, threshold, every)

        def done(review):
            if session.journal.next_seq != seq:  # edited while the queue was built
                review.close()
                return self._attach(proof)
            self.review = review
            review.on_change.append(self._on_review_changed)
            p = review.progress()
            shown = self.next_item()
            self._say(
                f"Review of {session.store.name}: {p['total']:,} candidates, "
                f"{p['reviewed']:,} reviewed before. {shown.message}"
            )
            return None

        self.controls.start(work, done, busy_message="Finding candidate errors...")

    def stop(self) -> None:
        """Stop reviewing: drop the item layers, restore the proofread layer's opacity."""
        if self.review is not None:
            self.review.close()
        self.review = None
        self._clear_item()
        self._update_panel()

    def _live(self) -> ReviewSession | None:
        """Return the review if its session is still the Proofread dock's one (else say so)."""
        review, proof = self.review, self.proofread
        if review is None:
            self._say("Error: no review running: press Start review")
            return None
        c = None if proof is None else proof.controller
        if c is None or c.session is not review.session:
            self.stop()
            self._say("Error: the Proofread dock's session changed: press Start review again")
            return None
        return review

    # --- actions -----------------------------------------------------------------------

    def next_item(self) -> Outcome:
        """Show the best pending item (of the chosen kind): camera, outlines and fix preview."""
        review = self._live()
        if review is None:
            return Outcome(self.status, None, True)
        c = review.next()
        if c is None:
            self._clear_item()
            skipped = review.progress()["skipped"]
            more = f"; {skipped} skipped (click a row to review one)" if skipped else ""
            return self._report(Outcome(f"No pending items left{more}."))
        self.show_item(c)
        return self._report(Outcome(f"item: {review.describe(c)}"))

    def show_item(self, candidate) -> None:
        """Centre the camera on an item, outline its segments, dim the rest, preview its fix.

        Only the labels in the item's :func:`view_box` are read.
        """
        review, layer = self.review, self.proofread.layer
        state = review.session.state
        box = view_box(candidate, state.fragments.shape)
        labels = state.labels_in(box)
        involved = np.where(
            np.isin(labels, np.asarray(candidate.segments, labels.dtype)), labels, 0
        )
        fix = candidate.preview_labels(state, box)
        item = np.where(in_plane_outline(involved) > 0, np.uint8(OUTLINE), fix)
        if layer.ndim > state.ndim:  # a 2D state shown as one section
            item, box = item[None], (slice(0, 1), *box)
        from napari.utils.colormaps import DirectLabelColormap

        # the layer gets its values first, then the z slider moves: one slicing
        before = tuple(self._viewer.dims.point)
        cmap = DirectLabelColormap(color_dict=_ITEM_COLORS)
        helper, fresh = self._put(ITEM_LAYER, box, item, layer, {"colormap": cmap})
        self._focus(layer, box)
        if tuple(self._viewer.dims.point) == before and not fresh:  # same slice: redraw it
            helper.refresh()
        if self._opacity is None:
            self._opacity = layer.opacity
        if layer.opacity != DIM:
            layer.opacity = DIM
        self._viewer.layers.selection.active = layer  # keys and clicks go to the proofread layer
        self.item.value = review.describe(candidate)
        self._select_current()

    def _focus(self, layer, box) -> None:
        """Centre the camera on a box (data coordinates of ``layer``) and zoom to fit it."""
        viewer = self._viewer
        lo = np.array([s.start for s in box], dtype=float)
        hi = np.array([s.stop for s in box], dtype=float)
        world = np.asarray(layer.data_to_world((lo + hi - 1) / 2), dtype=float)
        size = (hi - lo) * np.abs(np.asarray(layer.scale, dtype=float))
        dims = viewer.dims
        offset = dims.ndim - layer.ndim
        displayed = [d - offset for d in dims.displayed if d >= offset]
        for axis in range(layer.ndim):
            if axis not in displayed:
                dims.set_point(axis + offset, world[axis])
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.center = tuple(float(world[d]) for d in displayed)
        extent = max(float(size[d]) for d in displayed) or 1.0
        canvas = min(getattr(getattr(viewer, "canvas", None), "size", (600, 600))) or 600
        camera.zoom = 0.8 * float(canvas) / extent

    def accept(self) -> Outcome:
        """Apply the item's suggested fix through the Proofread dock (journaled, undoable)."""
        review = self._live()
        if review is None:
            return Outcome(self.status, None, True)
        outcome = self.proofread.run_action(lambda _controller: review.accept())
        return self._answered(outcome)

    def reject(self) -> Outcome:
        """Mark the item correct: its fix is not applied."""
        review = self._live()
        if review is None:
            return Outcome(self.status, None, True)
        return self._answered(review.reject())

    def skip(self) -> Outcome:
        """Put the item aside."""
        review = self._live()
        if review is None:
            return Outcome(self.status, None, True)
        return self._answered(review.skip())

    def _answered(self, outcome: Outcome) -> Outcome:
        if outcome.error or not self.advance.value:
            if not outcome.error:
                self._clear_item()
            return self._report(outcome)
        self._report(outcome)
        following = self.next_item()
        self._say(f"{outcome.message}; next {following.message}")
        return outcome

    def retrain(self) -> Outcome:
        """Refit the scorer from the answers and re-rank the queue."""
        review = self._live()
        if review is None:
            return Outcome(self.status, None, True)
        return self._report(review.retrain())

    def select(self, cid: str) -> Outcome:
        """Show a candidate of the table (pending or skipped)."""
        review = self._live()
        if review is None:
            return Outcome(self.status, None, True)
        try:
            c = review.select(cid)
        except KeyError as error:
            return self._report(Outcome(f"Error: {error.args[0]}", None, True))
        self.show_item(c)
        return self._report(Outcome(f"item: {review.describe(c)}"))

    # --- panel -------------------------------------------------------------------------

    def _on_review_changed(self) -> None:
        """Update the panel after an edit in the Proofread dock (undo, redo, a hand merge)."""
        from qtpy.QtCore import QTimer

        QTimer.singleShot(0, self._after_edit)  # after the edit is done and drawn

    def _after_edit(self) -> None:
        review = self.review
        if review is None:
            return
        c = review.current
        if c is not None and review.queue.candidates.get(c.id) is not c:
            review.current = None  # the edit changed its segments
            self._clear_item()
        self._say(self.status)  # shows a listener warning, if any
        self._update_panel()

    def _on_kind(self, value) -> None:
        names = {v: k for k, v in KIND_NAMES.items()}
        if self.review is not None:
            self.review.kind = names.get(value)
            self.review.current = None
        self._update_panel()

    def _on_every(self, value) -> None:
        if self.review is not None:
            self.review.queue.retrain_every = int(value)

    def _on_row_click(self, index) -> None:
        cid = self.model.ids[index.row()]
        if self.review is not None and self.review.row(cid)[5] in ("pending", "skipped"):
            self.select(cid)

    def _report(self, outcome: Outcome) -> Outcome:
        self._say(outcome.message)
        self._update_panel()
        return outcome

    def _say(self, message: str) -> None:
        review = self.review
        if review is not None and review.error:
            message, review.error = f"{message}\nWarning: {review.error}", ""
        self.controls.status.value = message

    @property
    def panel_pending(self) -> bool:
        """bool: Whether the table and progress wait for an update (after the item is shown)."""
        review = self.review
        return review is not None and self._shown != (id(review), review.version, review.kind)

    def _update_panel(self) -> None:
        """Update the buttons now; the table and progress once the item is on screen."""
        review = self.review
        on = review is not None
        for button in (self.next_button, self.retrain_button):
            button.enabled = on
        for button in (self.accept_button, self.reject_button, self.skip_button):
            button.enabled = on and review.current is not None
        if not on:
            self.progress.value = ""
            self.model.set_rows([])
            self._shown = None
            return
        if self.panel_pending:  # the queue changed: table and progress after the next paint
            if not self._panel_queued:
                from qtpy.QtCore import QTimer

                self._panel_queued = True
                QTimer.singleShot(0, self._flush_panel)
            return
        self._select_current()

    def _flush_panel(self) -> None:
        self._panel_queued = False
        review = self.review
        if review is None or not self.panel_pending:
            return
        self._shown = (id(review), review.version, review.kind)
        self.progress.value = review.progress_text()
        self.model.set_rows(review.row_ids(review.kind), review.row)
        self._select_current()

    def _select_current(self) -> None:
        review = self.review
        if review is not None and review.current is not None:
            row = self.model.row_of(review.current.id)
            if row >= 0:
                self.table.selectRow(row)
                self.table.scrollTo(self.model.index(row, 0))

    # --- layers ------------------------------------------------------------------------

    def _put(self, name: str, box, values, base, style: dict):
        """Show ``values`` in ``box`` on the item layer ``name``, over the whole of ``base``.

        The layer's data is a :class:`~._review_layers.BoxVolume` of the proofread
        layer's shape and placement, so a new item never changes its extent.
        Returns ``(layer, new)``; an existing layer is not redrawn here.
        """
        layer = self._layers.get(name)
        if (
            layer is not None
            and layer in self._viewer.layers
            and layer.name == name
            and isinstance(layer.data, BoxVolume)
            and layer.data.shape == tuple(base.data.shape)
        ):
            for key in ("scale", "translate"):
                if not np.array_equal(getattr(layer, key), getattr(base, key)):
                    setattr(layer, key, getattr(base, key))
            layer.data.set(box, values)
            if not layer.visible:
                layer.visible = True
            return layer, False
        volume = BoxVolume(base.data.shape, values.dtype)
        volume.set(box, values)
        place = {"scale": base.scale, "translate": base.translate}
        layer = unwrap_proxy(self._viewer.add_labels(volume, name=name, **place, **style))
        self._layers[name] = layer
        return layer, True

    def _clear_item(self) -> None:
        for name in (ITEM_LAYER,):
            layer = self._layers.pop(name, None)
            if layer is not None and layer in self._viewer.layers:
                self._viewer.layers.remove(layer)
        proof = self.proofread
        if self._opacity is not None and proof is not None and proof.layer is not None:
            proof.layer.opacity = self._opacity
        self._opacity = None
        self.item.value = "no item"


def _same(a, b) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _on_gone(dock):
    """Return what runs once the dock's widget is destroyed: keys back, history listener off."""
    unbind = _unbinder(dock._viewer, dock._unbound)

    def gone(*_):
        unbind()
        if dock.review is not None:
            dock.review.close()
            dock.review = None
        if dock._timer is not None:
            try:
                dock._timer.stop()
            except RuntimeError:  # already deleted with the widget
                pass

    return gone


def _unbinder(viewer, unbound: dict):
    """Return a function restoring the keys the dock bound (safe after the dock is gone)."""

    def restore(*_):
        for key, old in list(unbound.items()):
            try:
                viewer.bind_key(key, old, overwrite=True)
            except Exception:  # noqa: BLE001, S110 - the viewer may be closing
                pass
            unbound.pop(key, None)

    return restore
