"""The model and device controls shared by the docks that run a network (Segment, Synapses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import ComboBox, FileEdit

BUNDLED, MODEL_FILE = "bundled", "file"


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


class ModelChoice:
    """A model picker (bundled or a file) and a device picker (auto, cpu, cuda).

    Attributes
    ----------
    model : magicgui.widgets.ComboBox
        ``"bundled"`` or ``"file"``.
    model_file : magicgui.widgets.FileEdit
        The weights file; shown only when ``model`` is ``"file"``.
    device : magicgui.widgets.ComboBox
        ``"auto"``, ``"cpu"`` or ``"cuda"`` (labelled "not available" without a GPU).
    """

    def __init__(self) -> None:
        self.model = ComboBox(label="model", choices=[BUNDLED, MODEL_FILE], value=BUNDLED)
        self.model_file = FileEdit(
            label="model file", filter="*.safetensors *.pt *.pth", nullable=True, visible=False
        )
        cuda = cuda_available()
        self.device = ComboBox(
            label="device",
            choices=[
                ("auto", "auto"),
                ("cpu", "cpu"),
                ("cuda" if cuda else "cuda (not available)", "cuda"),
            ],
            value="auto",
            tooltip="auto uses CUDA when present" + ("" if cuda else "; no CUDA GPU found here"),
        )
        self.model.changed.connect(self._show_file)

    def _show_file(self, _value=None) -> None:
        self.model_file.visible = self.model.value == MODEL_FILE

    def chosen_device(self) -> str:
        """Return the picked device; refuse CUDA where there is none."""
        device = self.device.value
        if device == "cuda" and not cuda_available():
            raise ValueError("CUDA was asked for but is not available here; pick auto or cpu")
        return device

    def chosen_model(self, bundled_path: Callable[[], Path], missing: str, what: str) -> str:
        """Return ``"bundled"`` or the picked file's path.

        Parameters
        ----------
        bundled_path : callable
            Returns where the bundled weights should be.
        missing : str
            The message when the bundled weights are not installed.
        what : str
            What the file holds, for the message when none is picked (e.g. "model").

        Raises
        ------
        ValueError
            When the bundled weights are missing or no existing file is picked.
        """
        if self.model.value == BUNDLED:
            if not bundled_path().is_file():
                raise ValueError(missing)
            return "bundled"
        path = self.model_file.value
        if path is None or not Path(path).is_file():
            raise ValueError(f"pick a {what} file (.safetensors, .pt or .pth)")
        return str(path)
