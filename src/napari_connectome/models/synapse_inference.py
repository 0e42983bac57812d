"""Tiled prediction of the synapse network's two maps (synapse, presynaptic side).

The same tiling, blending, resampling and out-of-memory handling as
:func:`~.inference.predict_boundaries`; only every output channel is kept
instead of the first.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .inference import _MIN_TILE, _resolve_model, _Run, _TileTooLarge, resample
from .tiling import check_volume, check_voxel_size, choose_planes, smallest_tile
from .weights import ModelFileError, load_model, resolve_device

__all__ = [
    "SYNAPSE_OUTPUT",
    "bundled_synapse_model_path",
    "load_synapse_model",
    "predict_synapse_maps",
]

#: ``output`` key of the synapse network's configuration.
SYNAPSE_OUTPUT = "synapse_probability"


def bundled_synapse_model_path() -> Path:
    """Path of the synapse model shipped with the package.

    Returns
    -------
    pathlib.Path
        ``napari_connectome/models/weights/synapse_unet.safetensors`` (it may not exist).
    """
    return Path(__file__).resolve().parent / "weights" / "synapse_unet.safetensors"


def load_synapse_model(path: Any = None, device: str | torch.device = "cpu"):
    """Load a synapse network (the bundled one when ``path`` is None or ``"bundled"``).

    Parameters
    ----------
    path : str, pathlib.Path or None
        Weights file.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    tuple of (torch.nn.Module, dict)
        The model in evaluation mode and its configuration.

    Raises
    ------
    ModelFileError
        If the file is missing or is not a synapse network (e.g. the boundary model).
    """
    if path is None or str(path) == "bundled":
        path = bundled_synapse_model_path()
        if not path.is_file():
            raise ModelFileError(
                f"the bundled synapse model is not installed (expected {path}); train one "
                "with 'napari-connectome train --target synapses' or pass a weights file"
            )
    model, config = load_model(path, device=device)
    if config.get("output") != SYNAPSE_OUTPUT or config["out_channels"] != 2:
        raise ModelFileError(
            f"{Path(path).name} is not a synapse model (output {config.get('output')!r}, "
            f"{config['out_channels']} channels); pass the synapse weights "
            "(synapse_unet.safetensors) instead"
        )
    return model, config


class _MultiRun(_Run):
    """A :class:`~.inference._Run` that keeps every output channel."""

    def __init__(self, volume, ndim, voxel_size, orientations, model, config, device, opts):
        super().__init__(volume, ndim, voxel_size, orientations, model, config, device, opts)
        self.channels = int(config["out_channels"])
        self.out = np.zeros((self.channels, *self.out.shape), np.float32)

    def _prepare(self, plan, index):
        state = super()._prepare(plan, index)
        state["acc"] = torch.zeros(
            (self.channels, *state["acc"].shape), dtype=torch.float32, device=self.device
        )
        return state

    def _flush(self, plan, pending) -> None:
        self._check_stop()
        th, tw = plan.rows.size, plan.cols.size
        batch = torch.stack([s["image"][:, y : y + th, x : x + tw] for s, y, x, _ in pending])
        probs = self._infer(batch, plan)
        for k, (state, y, x, window) in enumerate(pending):
            state["acc"][:, y : y + th, x : x + tw] += probs[k] * window
            state["remaining"] -= 1
            if state["remaining"] == 0:
                self._finish(state)
        self.done += len(pending)
        self._report()

    def _finish(self, state) -> None:
        plan = state["plan"]
        top, left = plan.rows.pad_before, plan.cols.pad_before
        height, width = plan.canon_shape
        probs = state["acc"][:, top : top + height, left : left + width][None]
        probs = resample(probs, plan.data_shape)[0].clamp_(0.0, 1.0).cpu().numpy()
        key = (slice(None), *plan.key(state["index"]))
        if len(self.plans) > 1:
            self.out[key] += probs
        else:
            self.out[key] = probs


def predict_synapse_maps(
    volume: Any,
    voxel_size: Sequence[float],
    model: Any = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    tile_size: int = 256,
    planes: str | Sequence[str] = "auto",
    progress: Callable[[int, int], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict the synapse and presynaptic-side probability of every voxel.

    Parameters
    ----------
    volume : array-like
        2D ``(y, x)`` or 3D ``(z, y, x)`` EM data (read one plane at a time).
    voxel_size : sequence of float
        Voxel size in nm.
    model : torch.nn.Module, tuple, str, pathlib.Path or None
        The network, a ``(model, config)`` pair, a weights file, or None for the
        bundled synapse model.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    batch_size, tile_size : int
        Tiles per forward pass and tile edge (canonical pixels), as in
        :func:`~.inference.predict_boundaries`.
    planes : str or sequence of str
        Orientations averaged (see :func:`~.tiling.choose_planes`).
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``.
    should_stop : callable, optional
        Returning True raises :class:`~.inference.PredictionCancelled`.

    Returns
    -------
    tuple of numpy.ndarray
        ``(synapse, presynaptic)`` ``float32`` maps in ``[0, 1]`` with the shape of
        ``volume``.

    Raises
    ------
    ValueError
        On a bad volume, voxel size or option, or a model with fewer than 2 channels.
    """
    volume = check_volume(volume)
    ndim = len(volume.shape)
    sizes = check_voxel_size(voxel_size, ndim)
    if ndim == 2:
        sizes, orientations = (1.0, *sizes), ("xy",)
    else:
        orientations = choose_planes(sizes, planes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    device = resolve_device(device)
    if model is None or isinstance(model, (str, Path)):
        model = load_synapse_model(model, device)
    model, config = _resolve_model(model, None, device)
    if int(config["out_channels"]) < 2:
        raise ValueError("the synapse prediction needs a model with 2 output channels")
    min_tile = max(_MIN_TILE, smallest_tile(config["context_px"], 2 ** (config["depth"] - 1)))
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < min_tile:
        raise ValueError(f"tile_size must be an integer >= {min_tile}, not {tile_size!r}")
    was_training = model.training
    model.to(device=device, memory_format=torch.channels_last).eval()
    opts = {
        "tile": tile_size,
        "batch_size": batch_size,
        "progress": progress,
        "should_stop": should_stop,
    }
    try:
        while True:
            run = _MultiRun(volume, ndim, sizes, orientations, model, config, device, opts)
            try:
                out = run.run()
                break
            except _TileTooLarge:
                if opts["tile"] // 2 < min_tile:
                    raise RuntimeError(
                        f"out of memory on {device} even for one tile of {opts['tile']} px"
                    ) from None
                opts["tile"] //= 2
                warnings.warn(
                    f"out of memory: starting again with tiles of {opts['tile']} px",
                    RuntimeWarning,
                    stacklevel=2,
                )
    finally:
        model.train(was_training)
    if run.low == run.high:
        raise ValueError(f"the volume is constant (all voxels = {run.low:g}); no synapses")
    if ndim == 2:
        out = out[:, 0]
    return out[0], out[1]
