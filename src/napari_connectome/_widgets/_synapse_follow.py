"""How the Synapses dock keeps partners in step with the segmentation (no model run).

Three ways the segmentation changes under a synapse table:

- another segmentation layer is chosen in the dock after a run (say the Proofread
  dock's layer, opened from the Segment dock's result): the partners are read
  from it, and follow its session if it has one;
- the segmentation layer gets new data (the Segment dock's threshold slider, or
  a Proofread dock opening a session on its layer): the segment ids are read
  again at the partner probes;
- the layer is a Proofread dock's ``"<name> proofread"`` layer: every merge,
  split, undo and redo of its session reaches a :class:`~._synapse_view.ProofreadLink`
  through the session history's listeners.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ._scope import level0, unwrap_proxy
from ._synapse_view import ProofreadLink, covered_region, grid_offset, to_image


def _values_at(data, coords: np.ndarray) -> np.ndarray:
    """Read an array at voxel coordinates (a lazy array: one box read)."""
    if isinstance(data, np.ndarray):
        return data[tuple(coords.T)].astype(np.uint64)
    lo, hi = coords.min(axis=0), coords.max(axis=0) + 1
    block = np.asarray(data[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))])
    return block[tuple((coords - lo).T)].astype(np.uint64)


class FollowSegmentation:
    """Mixin of the Synapses dock: partners follow the segmentation layer and its session.

    The dock provides ``_viewer``, ``_ctx`` (the run's image, labels, region,
    offset), ``_watched`` (a list), ``_choosing`` (set by :meth:`_setting_box`),
    ``segmentation``, ``_table()``, ``link``, ``refresh`` and ``controls.status``.
    """

    @contextmanager
    def _setting_box(self):
        """While the dock itself sets its boxes, a segmentation change re-links nothing."""
        self._choosing = True
        try:
            yield
        finally:
            self._choosing = False

    def _watch(self, labels) -> None:
        """Re-derive partners whenever ``labels`` gets new data (connected once)."""
        if not any(labels is w for w in self._watched):
            self._watched.append(labels)
            labels.events.data.connect(lambda _e=None, layer=labels: self._on_labels_data(layer))

    def _on_segmentation_choice(self, layer) -> None:
        """Read the partners from a segmentation layer chosen after the run (no model run).

        The layer must cover the run's region on the image's pixel grid; otherwise
        the partners stay with the run's layer and the status says why.
        """
        old = self._ctx.get("labels") if self._table() is not None else None
        if self._choosing or old is None or layer is None or layer is old:
            return
        image, region = self._ctx["image"], self._ctx["region"]
        try:
            offset = grid_offset(image, layer)
            shape = tuple(int(n) for n in level0(image).shape)
            if covered_region(region, shape, offset, level0(layer).shape) != region:
                raise ValueError(f"'{layer.name}' does not cover the whole region of the run")
        except ValueError as error:
            if old in self._viewer.layers:  # the box shows the layer still in use
                with self._setting_box():
                    self.segmentation.value = old
            self.controls.status.value = (
                f"Error: {error}; partners are still from '{old.name}' (run again to use it)"
            )
            return
        self._ctx = {**self._ctx, "labels": layer, "offset": offset}
        self._watch(layer)
        self._on_labels_data(layer)
        follow = ", following its proofreading session" if self.link is not None else ""
        self.controls.status.value = f"Partners now from '{layer.name}'{follow} (no model run)."

    # --- following the segmentation ----------------------------------------------------

    def _proofread_dock(self, layer):
        from .proofread_dock import ProofreadDock

        window = getattr(self._viewer, "window", None)
        docks = getattr(window, "dock_widgets", {}) if window is not None else {}
        for dock in map(unwrap_proxy, docks.values()):
            if isinstance(dock, ProofreadDock) and dock.layer is layer:
                return dock
        return None

    def follow(self, dock) -> bool:
        """Make the partners follow a Proofread dock's session (edits re-derive them).

        Parameters
        ----------
        dock : ProofreadDock
            The dock; its ``layer`` must be this run's segmentation layer and a
            session must be open.

        Returns
        -------
        bool
            Whether the partners now follow that session.
        """
        table = self._table()
        if self.link is not None:
            self.link.detach()
            self.link = None
        labels = self._ctx.get("labels")
        if table is None or dock is None or dock.controller is None or dock.layer is not labels:
            return False
        state = dock.controller.state
        self.link = ProofreadLink(
            table,
            dock.controller.history,
            self._ctx["region"],
            self._ctx["offset"],
            lifted=state.ndim < labels.ndim,
            on_change=lambda: self.refresh(points=False, arrows_later=True),
        )
        return True

    def _follow(self) -> None:
        self.follow(self._proofread_dock(self._ctx.get("labels")))

    def _on_labels_data(self, layer) -> None:
        """Re-derive partners when the segmentation layer gets new data (session, threshold)."""
        if self._table() is None or layer is not self._ctx.get("labels"):
            return
        dock = self._proofread_dock(layer)
        if dock is not None and dock.controller is not None:
            self.follow(dock)  # a (re)opened session: read its state
        else:
            self._read_partners(layer)
        self.refresh()

    def _read_partners(self, layer) -> None:
        """Re-read segment ids at the probes from the layer (no model run)."""
        if self.link is not None:
            self.link.detach()
            self.link = None
        table = self._table()
        data = level0(layer)
        pixels = to_image(table.probes.coords, self._ctx["region"])
        coords = np.rint(pixels - np.asarray(self._ctx["offset"], float)).astype(np.int64)
        inside = np.all((coords >= 0) & (coords < np.asarray(data.shape)), axis=1)
        values = np.zeros(len(coords), np.uint64)
        if inside.any():
            values[inside] = _values_at(data, coords[inside])
        table.set_probe_fragments(values)
        table.segment_table = None
        table.derive()
