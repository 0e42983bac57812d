"""Tiled, batched prediction of a neuron-boundary probability map.

Each plane of the volume is read on its own (so zarr / dask volumes are read
section by section), normalised, resampled to the model's canonical pixel size,
cut into overlapping tiles whose predictions are blended with a smooth window,
and resampled back to the data grid. For isotropic data the xy, xz and yz
planes are predicted and averaged.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .tiling import (
    PLANE_AXIS,
    AxisTiles,
    axis_tiles,
    axis_window,
    check_volume,
    check_voxel_size,
    choose_planes,
    normalize_plane,
    smallest_tile,
)
from .unet import default_config, model_context, validate_config
from .weights import load_bundled_model, load_model, resolve_device

__all__ = [
    "PredictionCancelled",
    "check_inputs",
    "choose_planes",
    "is_out_of_memory",
    "predict_boundaries",
    "resample",
    "run_prediction",
    "symmetries",
]

_MIN_TILE = 64

#: In-plane symmetries averaged per tile by :func:`predict_boundaries` when none are given
#: (test-time augmentation, see :func:`symmetries`).
DEFAULT_AUGMENT = 4

#: Allowed numbers of in-plane symmetries.
AUGMENT_CHOICES = (1, 2, 4, 8)


class PredictionCancelled(Exception):
    """Raised when ``should_stop()`` returned True during a prediction."""


class _TileTooLarge(Exception):
    """One tile alone does not fit in the device's memory."""


def is_out_of_memory(err: BaseException) -> bool:
    """Tell whether an exception is a (CUDA) out-of-memory error.

    Parameters
    ----------
    err : BaseException
        The exception.

    Returns
    -------
    bool
        True for ``torch.cuda.OutOfMemoryError`` or a ``RuntimeError`` saying "out of memory".
    """
    oom = getattr(torch.cuda, "OutOfMemoryError", None) or getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def resample(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resample a ``(batch, channels, h, w)`` tensor to ``size``.

    Parameters
    ----------
    image : torch.Tensor
        Input, 4D.
    size : sequence of int
        Output ``(height, width)``.

    Returns
    -------
    torch.Tensor
        The resampled tensor (anti-aliased where it shrinks); the input itself if
        the size is unchanged.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(image.shape[-2:]) == size:
        return image
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _resolve_model(model: Any, config: dict | None, device: torch.device):
    if model is None or isinstance(model, (str, Path)):
        loaded, loaded_config = load_bundled_model(device) if model is None else load_model(model)
        return loaded, config or loaded_config
    if isinstance(model, tuple) and len(model) == 2:
        model, config = model[0], config or model[1]
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch module, a path or None, not {type(model)}")
    if config is None:
        config = getattr(model, "config", None) or default_config()
    config = validate_config(config)
    config.setdefault("context_px", getattr(model, "context", model_context(config["depth"])))
    return model, config


def _reflect_pad(image: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Pad (left, right, top, bottom) by reflection, repeatedly when pads exceed the size."""
    left, right, top, bottom = pads
    while left or right or top or bottom:
        h, w = image.shape[-2], image.shape[-1]
        if h < 2 or w < 2:
            return F.pad(image, [left, right, top, bottom], mode="replicate")
        step = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
        image = F.pad(image, step, mode="reflect")
        left, right, top, bottom = (
            a - b for a, b in zip((left, right, top, bottom), step, strict=True)
        )
    return image


def symmetries(augment: int) -> list[tuple[bool, bool, bool]]:
    """List the in-plane symmetries of test-time augmentation.

    Parameters
    ----------
    augment : {1, 2, 4, 8}
        How many: 1 the identity only; 2 adds the left-right mirror; 4 the four
        mirrors (identity, left-right, up-down, both: exact for any tile shape); 8
        adds the same four after swapping rows and columns (the dihedral group of
        the square: every 90-degree rotation and mirror).

    Returns
    -------
    list of tuple of bool
        ``(transpose, flip_rows, flip_cols)`` per symmetry, the identity first.

    Raises
    ------
    ValueError
        If ``augment`` is not one of 1, 2, 4 or 8.
    """
    if not isinstance(augment, int) or isinstance(augment, bool) or augment not in AUGMENT_CHOICES:
        raise ValueError(
            f"augment must be one of {AUGMENT_CHOICES} (in-plane symmetries averaged), "
            f"not {augment!r}"
        )
    mirrors = [(False, False), (False, True), (True, False), (True, True)]
    return [(t, fr, fc) for t in (False, True) for fr, fc in mirrors][:augment]


def _apply(tensor: torch.Tensor, symmetry: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, flip_rows, flip_cols = symmetry
    if transpose:
        tensor = tensor.transpose(-2, -1)
    dims = [d for d, on in ((-2, flip_rows), (-1, flip_cols)) if on]
    return tensor.flip(dims) if dims else tensor


def _undo(tensor: torch.Tensor, symmetry: tuple[bool, bool, bool]) -> torch.Tensor:
    transpose, flip_rows, flip_cols = symmetry
    dims = [d for d, on in ((-2, flip_rows), (-1, flip_cols)) if on]
    if dims:
        tensor = tensor.flip(dims)
    return tensor.transpose(-2, -1) if transpose else tensor


class _Plan:
    """Geometry of one plane orientation: data and canonical shapes, tiles."""

    def __init__(self, name, volume_shape, voxel_size, pixel, tile, halo, factor):
        self.name = name
        self.axis = PLANE_AXIS[name]
        dims = [d for d in range(3) if d != self.axis]
        self.count = volume_shape[self.axis]
        self.data_shape = tuple(volume_shape[d] for d in dims)
        self.canon_shape = tuple(
            max(1, round(volume_shape[d] * voxel_size[d] / pixel)) for d in dims
        )
        self.rows: AxisTiles = axis_tiles(self.canon_shape[0], tile, halo, factor)
        self.cols: AxisTiles = axis_tiles(self.canon_shape[1], tile, halo, factor)
        self.tiles_per_plane = len(self.rows.starts) * len(self.cols.starts)
        self._windows: dict = {}

    def window(self, row: int, col: int, device: torch.device) -> torch.Tensor:
        nr, nc = len(self.rows.starts), len(self.cols.starts)
        key = (row == 0, row == nr - 1, col == 0, col == nc - 1)
        if key not in self._windows:
            r = 0 if key[0] else (nr - 1 if key[1] else 1)
            c = 0 if key[2] else (nc - 1 if key[3] else 1)
            window = np.outer(axis_window(self.rows, r), axis_window(self.cols, c))
            self._windows[key] = torch.from_numpy(window.astype(np.float32)).to(device)
        return self._windows[key]

    def key(self, index: int) -> tuple:
        key: list[Any] = [slice(None)] * 3
        key[self.axis] = index
        return tuple(key)


class _Run:
    """One pass over the volume with a fixed tile size, keeping the first ``channels``."""

    def __init__(self, volume, ndim, voxel_size, orientations, model, config, device, opts):
        self.volume, self.ndim, self.model, self.device = volume, ndim, model, device
        self.norm = config["normalization"]
        self.opts = opts
        self.channels = opts["channels"]
        shape = (1, *volume.shape) if ndim == 2 else tuple(volume.shape)
        halo = int(config["context_px"])
        factor = 2 ** (int(config["depth"]) - 1)
        self.plans = [
            _Plan(o, shape, voxel_size, config["pixel_size_nm"], opts["tile"], halo, factor)
            for o in orientations
        ]
        self.total = sum(p.count * p.tiles_per_plane for p in self.plans)
        self.done = 0
        self.out = np.zeros((self.channels, *shape), np.float32)
        self.low, self.high = math.inf, -math.inf

    def _check_stop(self) -> None:
        should_stop = self.opts["should_stop"]
        if should_stop is not None and should_stop():
            raise PredictionCancelled("the boundary prediction was cancelled")

    def _read(self, plan: _Plan, index: int) -> np.ndarray:
        if self.ndim == 2:
            plane = np.asarray(self.volume[:, :])
        else:
            plane = np.asarray(self.volume[plan.key(index)])
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            where = f"plane {index} ({plan.name})" if self.ndim == 3 else "the image"
            raise ValueError(
                f"the volume contains NaN or infinite values ({where}): fill them (e.g. "
                "with the mean grey value) or crop them away first"
            )
        if plane.size:
            self.low = min(self.low, float(plane.min()))
            self.high = max(self.high, float(plane.max()))
        return plane

    def run(self) -> np.ndarray:
        self._report()
        for plan in self.plans:
            pending: list = []
            for index in range(plan.count):
                self._check_stop()
                state = self._prepare(plan, index)
                for r, ys in enumerate(plan.rows.starts):
                    for c, xs in enumerate(plan.cols.starts):
                        pending.append((state, ys, xs, plan.window(r, c, self.device)))
                        if len(pending) >= self._batch_for(plan):
                            self._flush(plan, pending)
                            pending = []
            if pending:
                self._flush(plan, pending)
        if len(self.plans) > 1:
            self.out /= len(self.plans)
        return self.out

    def _prepare(self, plan: _Plan, index: int) -> dict:
        image = normalize_plane(self._read(plan, index), self.norm)
        tensor = torch.from_numpy(image).to(self.device)[None, None]
        tensor = resample(tensor, plan.canon_shape)
        rows, cols = plan.rows, plan.cols
        tensor = _reflect_pad(
            tensor, (cols.pad_before, cols.pad_after, rows.pad_before, rows.pad_after)
        )
        return {
            "plan": plan,
            "index": index,
            "image": tensor[0],
            "acc": torch.zeros(
                (self.channels, *tensor.shape[-2:]), dtype=torch.float32, device=self.device
            ),
            "remaining": plan.tiles_per_plane,
        }

    def _flush(self, plan: _Plan, pending: list) -> None:
        self._check_stop()
        th, tw = plan.rows.size, plan.cols.size
        batch = torch.stack([s["image"][:, y : y + th, x : x + tw] for s, y, x, _ in pending])
        probs = self._infer(batch, plan)
        for k, (state, y, x, window) in enumerate(pending):
            state["acc"][:, y : y + th, x : x + tw] += probs[k, : self.channels] * window
            state["remaining"] -= 1
            if state["remaining"] == 0:
                self._finish(state)
        self.done += len(pending)
        self._report()

    def _batch_for(self, plan: _Plan) -> int:
        """Tiles per forward pass: ``batch_size`` regular tiles' worth of pixels."""
        budget = self.opts["batch_size"] * self.opts["tile"] ** 2
        return max(1, budget // (plan.rows.size * plan.cols.size))

    def _infer(self, batch: torch.Tensor, plan: _Plan) -> torch.Tensor:
        outputs, start = [], 0
        while start < len(batch):
            chunk = batch[start : start + self._batch_for(plan)]
            try:
                outputs.append(self._forward(chunk))
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if len(chunk) == 1:
                    raise _TileTooLarge() from err
                self.opts["batch_size"] = max(1, len(chunk) // 2)
                warnings.warn(
                    f"out of memory: batch size lowered to {self.opts['batch_size']}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            start += len(chunk)
        return torch.cat(outputs)

    def _forward(self, chunk: torch.Tensor) -> torch.Tensor:
        """Probabilities of one batch, averaged over the symmetries (one at a time)."""
        views = self.opts["symmetries"]
        with torch.inference_mode():
            total = None
            for symmetry in views:
                view = _apply(chunk, symmetry).contiguous(memory_format=torch.channels_last)
                probs = _undo(torch.sigmoid(self._logits(view).float()), symmetry)
                total = probs.clone() if total is None else total.add_(probs)
            if len(views) > 1:
                total /= len(views)
            return total

    def _logits(self, chunk: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            with torch.autocast("cuda", dtype=dtype):
                return self.model(chunk)
        return self.model(chunk)

    def _finish(self, state: dict) -> None:
        plan: _Plan = state["plan"]
        top, left = plan.rows.pad_before, plan.cols.pad_before
        height, width = plan.canon_shape
        probs = state["acc"][:, top : top + height, left : left + width][None]
        probs = resample(probs, plan.data_shape)[0].clamp_(0.0, 1.0).cpu().numpy()
        key = (slice(None), *plan.key(state["index"]))
        if len(self.plans) > 1:
            self.out[key] += probs
        else:
            self.out[key] = probs

    def _report(self) -> None:
        if self.opts["progress"] is not None:
            self.opts["progress"](self.done, self.total)


def predict_boundaries(
    volume: Any,
    voxel_size: Sequence[float],
    model: Any = None,
    *,
    config: dict | None = None,
    device: str | torch.device = "auto",
    batch_size: int = 8,
    tile_size: int = 256,
    planes: str | Sequence[str] = "auto",
    augment: int = DEFAULT_AUGMENT,
    progress: Callable[[int, int], Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Predict the neuron-boundary probability of every voxel of an EM volume.

    Parameters
    ----------
    volume : array-like
        2D image ``(y, x)`` or 3D volume ``(z, y, x)``: numpy, zarr, dask or any
        object with ``shape``, ``dtype`` and numpy-style indexing. Only one plane
        is read at a time.
    voxel_size : sequence of float
        Voxel size in nm, ``(z, y, x)`` for 3D or ``(y, x)`` for 2D.
    model : torch.nn.Module, tuple, str, pathlib.Path or None
        The network, a ``(model, config)`` pair as returned by
        :func:`~napari_connectome.models.weights.load_model`, a weights file, or
        None for the bundled model.
    config : dict, optional
        Model configuration (canonical pixel size, normalisation, halo); taken
        from the loaded file, ``model.config`` or the defaults when omitted.
    device : str or torch.device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``...
    batch_size : int
        Tiles per forward pass; halved on out-of-memory errors.
    tile_size : int
        Tile edge in canonical pixels; halved when one tile does not fit in memory.
    planes : str or sequence of str
        Orientations to predict and average, see :func:`choose_planes`; 2D
        images always use ``"xy"``.
    augment : {1, 2, 4, 8}
        Test-time augmentation: each tile is predicted in this many in-plane
        mirrored / rotated views (see :func:`symmetries`) and the probabilities
        are averaged, for cleaner membranes at ``augment`` times the model's
        cost. The default :data:`DEFAULT_AUGMENT` (the four mirrors) is what the
        project's accuracy figures use; 1 is the plain network.
    progress : callable, optional
        Called as ``progress(done_tiles, total_tiles)``.
    should_stop : callable, optional
        Polled between batches; returning True raises :class:`PredictionCancelled`.

    Returns
    -------
    numpy.ndarray
        ``float32`` probabilities in ``[0, 1]`` with the shape of ``volume``.

    Raises
    ------
    ValueError
        On a volume that is not 2D/3D, looks like RGB, holds NaN, is constant,
        or on a bad voxel size / option.
    PredictionCancelled
        If ``should_stop()`` returned True.
    """
    volume, ndim, sizes, orientations = check_inputs(volume, voxel_size, planes, batch_size)
    device = resolve_device(device)
    model, config = _resolve_model(model, config, device)
    out = run_prediction(
        volume,
        ndim,
        sizes,
        orientations,
        (model, config),
        device=device,
        channels=1,
        batch_size=batch_size,
        tile_size=tile_size,
        progress=progress,
        should_stop=should_stop,
        purpose="nothing to segment",
        augment=augment,
    )
    return out[0, 0] if ndim == 2 else out[0]


def check_inputs(volume: Any, voxel_size: Sequence[float], planes, batch_size: int):
    """Check the volume and options of a prediction.

    Parameters
    ----------
    volume : array-like
        2D or 3D EM data.
    voxel_size : sequence of float
        Voxel size in nm, one per axis.
    planes : str or sequence of str
        Orientations asked for (see :func:`choose_planes`); a 2D image has only ``"xy"``.
    batch_size : int
        Tiles per forward pass.

    Returns
    -------
    tuple
        ``(volume, ndim, voxel_size (z, y, x), orientations)``; a 2D image gets a unit z.

    Raises
    ------
    ValueError
        On a volume that is not 2D/3D or looks like RGB, a bad voxel size, planes or
        batch size.
    """
    volume = check_volume(volume)
    ndim = len(volume.shape)
    sizes = check_voxel_size(voxel_size, ndim)
    if ndim == 2:
        if planes not in ("auto", "xy", ("xy",), ["xy"]):
            raise ValueError(f"a 2D image has only the 'xy' plane, not planes={planes!r}")
        sizes, orientations = (1.0, *sizes), ("xy",)
    else:
        orientations = choose_planes(sizes, planes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
    return volume, ndim, sizes, orientations


def run_prediction(
    volume: Any,
    ndim: int,
    voxel_size: Sequence[float],
    orientations: Sequence[str],
    model: tuple,
    *,
    device: torch.device,
    channels: int,
    batch_size: int,
    tile_size: int,
    progress: Callable[[int, int], Any] | None,
    should_stop: Callable[[], bool] | None,
    purpose: str,
    augment: int = 1,
) -> np.ndarray:
    """Predict the first ``channels`` output channels over a checked volume.

    Tiles that do not fit in memory are retried with half the batch, then with half
    the tile size; the model's training mode is restored afterwards.

    Parameters
    ----------
    volume : array-like
        The volume as returned by :func:`check_inputs`.
    ndim : int
        2 or 3.
    voxel_size : sequence of float
        ``(z, y, x)`` voxel size in nm.
    orientations : sequence of str
        Planes predicted and averaged.
    model : tuple of (torch.nn.Module, dict)
        The network and its resolved configuration.
    device : torch.device
        Where to run.
    channels : int
        Number of leading output channels kept.
    batch_size, tile_size : int
        Tiles per forward pass and tile edge (canonical pixels).
    progress : callable or None
        ``progress(done_tiles, total_tiles)``.
    should_stop : callable or None
        Returning True raises :class:`PredictionCancelled`.
    purpose : str
        End of the error raised on a constant volume (what cannot be done).
    augment : {1, 2, 4, 8}, optional
        In-plane symmetries averaged per tile (:func:`symmetries`); 1, no
        augmentation, by default.

    Returns
    -------
    numpy.ndarray
        ``float32`` ``(channels, z, y, x)`` probabilities (``z = 1`` for a 2D image).

    Raises
    ------
    ValueError
        On a tile size too small for the model, a bad ``augment``, or a constant volume.
    RuntimeError
        If one tile of the smallest size does not fit in memory.
    PredictionCancelled
        If ``should_stop()`` returned True.
    """
    model, config = model
    views = symmetries(augment)
    min_tile = max(_MIN_TILE, smallest_tile(config["context_px"], 2 ** (config["depth"] - 1)))
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < min_tile:
        raise ValueError(f"tile_size must be an integer >= {min_tile}, not {tile_size!r}")
    was_training = model.training
    model.to(device=device, memory_format=torch.channels_last).eval()
    opts = {
        "tile": tile_size,
        "batch_size": batch_size,
        "channels": channels,
        "progress": progress,
        "should_stop": should_stop,
        "symmetries": views,
    }
    try:
        while True:
            run = _Run(volume, ndim, voxel_size, orientations, model, config, device, opts)
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
                    stacklevel=3,
                )
    finally:
        model.train(was_training)
    if run.low == run.high:
        raise ValueError(f"the volume is constant (all voxels = {run.low:g}); {purpose}")
    return out
