"""Reading volumes from disk: zarr, OME-Zarr, TIFF, HDF5 and NumPy files.

Pure Python: no Qt, no napari, no torch.
"""

from .volumes import (
    SUPPORTED_SUFFIXES,
    Volume,
    VolumeError,
    list_arrays,
    open_volume,
    parse_volume_spec,
    read_array,
    volume_format,
)

__all__ = [
    "SUPPORTED_SUFFIXES",
    "Volume",
    "VolumeError",
    "list_arrays",
    "open_volume",
    "parse_volume_spec",
    "read_array",
    "volume_format",
]
