"""Neural networks of napari-connectome: the boundary U-Net, its weights, prediction, training.

Importing this package is cheap: torch loads only when one of the names below
is first used (``from napari_connectome.models import predict_boundaries``).

- :func:`predict_boundaries` (``models.inference``): boundary probability map of
  a 2D/3D EM volume, tiled, at the model's canonical pixel size;
- :func:`load_model`, :func:`save_model`, :func:`load_bundled_model`,
  :func:`bundled_model_path`, :class:`ModelFileError` (``models.weights``);
- :func:`build_model`, :func:`default_config`, :class:`BoundaryUNet` (``models.unet``);
- :class:`TrainingConfig`, :func:`train` (``models.training``);
  ``napari-connectome train --help`` trains from the command line.
"""

from importlib import import_module

_EXPORTS = {
    "BoundaryUNet": "unet",
    "build_model": "unet",
    "default_config": "unet",
    "ModelFileError": "weights",
    "bundled_model_path": "weights",
    "load_bundled_model": "weights",
    "load_model": "weights",
    "save_model": "weights",
    "save_torchscript": "weights",
    "PredictionCancelled": "inference",
    "predict_boundaries": "inference",
    "TrainingConfig": "training",
    "train": "training",
    "DataSource": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
