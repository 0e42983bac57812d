"""The Export dock: save a labels layer as OME-Zarr, TIFF or HDF5, block by block."""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit

from ..io.export import EXPORT_SUFFIXES, check_export_path, describe_export, export_labels
from ._run_controls import RunControls
from ._scope import layer_voxel_size, level0


class _Stopped(Exception):
    """The export was cancelled."""


class ExportDock(Container):
    """Export a labels layer (its full-resolution data) to a file.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name) whose labels layers are offered.
    """

    def __init__(self, napari_viewer) -> None:
        self._viewer = napari_viewer
        self.layer = ComboBox(label="labels", choices=self._layer_choices, nullable=True)
        self.dest = FileEdit(
            label="save as",
            mode="w",
            filter=" ".join(f"*{s}" for s in EXPORT_SUFFIXES),
        )
        self.overwrite = CheckBox(text="overwrite", value=False)
        self.controls = RunControls(run_text="Export")
        super().__init__(widgets=[self.layer, self.dest, self.overwrite, self.controls])
        self.controls.run_button.changed.connect(self.run)
        for event in ("inserted", "removed", "moved"):
            getattr(napari_viewer.layers.events, event).connect(self._refresh)
        self._refresh()

    def _layer_choices(self, _widget=None) -> list:
        from napari.layers import Labels

        return [(lyr.name, lyr) for lyr in self._viewer.layers if isinstance(lyr, Labels)]

    def _refresh(self, _event=None) -> None:
        chosen = self.layer.value
        self.reset_choices()
        choices = [c[1] for c in self._layer_choices()]
        if chosen in choices:
            self.layer.value = chosen
        elif choices:
            self.layer.value = choices[-1]

    def run(self) -> None:
        """Check the inputs, then export off the GUI thread with progress."""
        layer = self.layer.value
        if layer is None:
            self.controls.status.value = "Error: pick a labels layer."
            return
        dest = Path(self.dest.value)
        overwrite = bool(self.overwrite.value)
        try:
            check_export_path(dest, overwrite=overwrite)
        except (ValueError, OSError) as error:
            self.controls.status.value = f"Error: {error}"
            return
        data = level0(layer)
        voxel = layer_voxel_size(layer.scale, layer.metadata)

        def work(report, should_stop):
            def progress(fraction, message):
                if should_stop():
                    raise _Stopped
                report(fraction, message)

            try:
                return export_labels(
                    data, dest, voxel_size=voxel, overwrite=overwrite, progress=progress
                )
            except _Stopped:
                return None

        self.controls.start(work, self._done, busy_message="Exporting...", progress=True)

    def _done(self, path) -> None:
        if path is not None:
            self.controls.status.value = f"Wrote {path.name}: {describe_export(path)}."
