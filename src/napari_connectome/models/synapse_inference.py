"""Tiled prediction of the synapse network's maps (synapse, presynaptic, postsynaptic side).

The same tiling, blending, resampling and out-of-memory handling as
:func:`~.inference.predict_boundaries`; only every output channel is kept
instead of the first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .inference import _resolve_model, check_inputs, run_prediction
from .weights import WEIGHTS_DIR, ModelFileError, installed_model, load_model, resolve_device

__all__ = [
    "SYNAPSE_AUGMENT",
    "SYNAPSE_CHANNELS",
    "SYNAPSE_OUTPUT",
    "SynapseMaps",
    "bundled_synapse_model_path",
    "load_synapse_model",
    "predict_synapse_maps",
]

#: ``output`` key of the synapse network's configuration.
SYNAPSE_OUTPUT = "synapse_probability"
#: Output channels of the synapse network, in order. Weights trained before the
#: postsynaptic channel existed have the first two only; they still load.
SYNAPSE_CHANNELS = ("synapse", "presynaptic", "postsynaptic")
#: In-plane views averaged per tile by default (test-time augmentation). One: the
#: detection and partner defaults were chosen on one view's maps. Four views (with
#: defaults re-chosen for them by ``scripts/tune_synapse_detection.py --augment 1 4``)
#: did better on training data but lost detection F1 on held-out sections and
#: phantoms (``docs/SYNAPSE_MODEL.md``), for four times the model's time.
SYNAPSE_AUGMENT = 1


class SynapseMaps(NamedTuple):
    """The synapse network's probability maps, ``float32`` in ``[0, 1]``.

    Attributes
    ----------
    synapse : numpy.ndarray
        Synaptic region.
    presynaptic : numpy.ndarray
        Presynaptic neuron near a synapse.
    postsynaptic : numpy.ndarray or None
        Postsynaptic neurons near a synapse (None from two-channel weights).
    """

    synapse: np.ndarray
    presynaptic: np.ndarray
    postsynaptic: np.ndarray | None


def bundled_synapse_model_path() -> Path:
    """Path of the synapse model shipped with the package.

    Returns
    -------
    pathlib.Path
        ``napari_connectome/models/weights/synapse_unet.safetensors`` (it may not exist).
    """
    return WEIGHTS_DIR / "synapse_unet.safetensors"


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
        command = "napari-connectome train --target synapses"
        path = installed_model(bundled_synapse_model_path(), "synapse", command)
    model, config = load_model(path, device=device)
    if config.get("output") != SYNAPSE_OUTPUT or config["out_channels"] not in (2, 3):
        raise ModelFileError(
            f"{Path(path).name} is not a synapse model (output {config.get('output')!r}, "
            f"{config['out_channels']} channels); pass the synapse weights "
            "(synapse_unet.safetensors) instead"
        )
    return model, config


def predict_synapse_maps(
    volume: Any,
    voxel_size: Sequence[float],
    model: Any = None,
    *,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    tile_size: int = 256,
    planes: str | Sequence[str] = "auto",
    augment: int = SYNAPSE_AUGMENT,
    progress: Callable[[int, int], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SynapseMaps:
    """Predict the synapse, presynaptic- and postsynaptic-side probability of every voxel.

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
    augment : {1, 2, 4, 8}
        In-plane mirrored / rotated views averaged per tile (test-time augmentation,
        see :func:`~.inference.symmetries`); :data:`SYNAPSE_AUGMENT` by default, the
        setting the detection defaults were chosen with.
    progress : callable, optional
        ``progress(done_tiles, total_tiles)``.
    should_stop : callable, optional
        Returning True raises :class:`~.inference.PredictionCancelled`.

    Returns
    -------
    SynapseMaps
        ``float32`` maps in ``[0, 1]`` with the shape of ``volume`` (``postsynaptic``
        is None for a two-channel model).

    Raises
    ------
    ValueError
        On a bad volume, voxel size or option, or a model with fewer than 2 channels.
    """
    volume, ndim, sizes, orientations = check_inputs(volume, voxel_size, planes, batch_size)
    device = resolve_device(device)
    if model is None or isinstance(model, (str, Path)):
        model = load_synapse_model(model, device)
    model, config = _resolve_model(model, None, device)
    channels = min(int(config["out_channels"]), len(SYNAPSE_CHANNELS))
    if channels < 2:
        raise ValueError("the synapse prediction needs a model with 2 or 3 output channels")
    out = run_prediction(
        volume,
        ndim,
        sizes,
        orientations,
        (model, config),
        device=device,
        channels=channels,
        batch_size=batch_size,
        tile_size=tile_size,
        progress=progress,
        should_stop=should_stop,
        purpose="no synapses",
        augment=augment,
    )
    if ndim == 2:
        out = out[:, 0]
    return SynapseMaps(out[0], out[1], out[2] if channels == 3 else None)
