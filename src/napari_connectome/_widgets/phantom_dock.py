"""The Phantom dock: make an EM phantom with its exact truth as napari layers."""

from __future__ import annotations

from magicgui.widgets import Container, LineEdit, SpinBox, TupleEdit

from .._sample_data import phantom_layer_data
from ._layer_output import LayerOutput
from ._run_controls import RunControls


def parse_section_list(text: str) -> tuple[int, ...]:
    """Parse ``"3, 7 12"`` into section indices.

    Parameters
    ----------
    text : str
        Integers separated by commas or spaces; empty for none.

    Returns
    -------
    tuple of int
        The section indices.

    Raises
    ------
    ValueError
        When an entry is not a whole number.
    """
    parts = text.replace(",", " ").split()
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise ValueError(
            f"sections must be whole numbers separated by commas, e.g. '3, 7'; got '{text}'"
        ) from None


class PhantomDock(Container):
    """Generate a synthetic EM volume with neuron, synapse and mitochondria truth.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it by this name) to add the phantom layers to.
    """

    def __init__(self, napari_viewer) -> None:
        viewer = napari_viewer
        self._viewer = viewer
        self.shape = TupleEdit(value=(32, 256, 256), label="shape (z, y, x)")
        self.voxel_size = TupleEdit(value=(40.0, 4.0, 4.0), label="voxel size (nm)")
        self.seed = SpinBox(value=0, min=0, max=2**31 - 1, label="seed")
        self.missing_sections = LineEdit(value="", label="missing sections")
        self.shifted_sections = LineEdit(value="", label="shifted sections")
        self.controls = RunControls(run_text="Make phantom")
        super().__init__(
            widgets=[
                self.shape,
                self.voxel_size,
                self.seed,
                self.missing_sections,
                self.shifted_sections,
                self.controls,
            ]
        )
        self._output = LayerOutput(viewer)
        self.controls.run_button.changed.connect(self.run)

    def run(self) -> None:
        """Make the phantom off the GUI thread; show it as layers when done."""
        from ..synthetic import make_phantom

        try:
            kwargs = {
                "shape": tuple(int(v) for v in self.shape.value),
                "voxel_size": tuple(float(v) for v in self.voxel_size.value),
                "seed": int(self.seed.value),
                "missing_sections": parse_section_list(self.missing_sections.value),
                "shifted_sections": parse_section_list(self.shifted_sections.value),
            }
        except ValueError as error:
            self.controls.status.value = f"Error: {error}"
            return
        self.controls.start(
            lambda: make_phantom(**kwargs),
            self._show,
            busy_message=f"Making a {kwargs['shape']} phantom...",
        )

    def _show(self, phantom) -> None:
        for data, kwargs, layer_type in phantom_layer_data(phantom):
            kwargs = dict(kwargs, name=f"phantom {kwargs['name']}")
            self._output.put(data, kwargs, layer_type)
        z, y, x = phantom.raw.shape
        self.controls.status.value = f"Phantom {z}x{y}x{x} at {phantom.voxel_size} nm."
