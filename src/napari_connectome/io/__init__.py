"""Reading volumes from disk: zarr, OME-Zarr, TIFF, HDF5 and NumPy files.

Pure Python: no Qt, no napari, no torch.
"""

from .segmentation_store import (
    OutputExistsError,
    StoredSegmentation,
    check_output_path,
    read_segmentation_store,
    write_segmentation_store,
)
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
    "OutputExistsError",
    "StoredSegmentation",
    "check_output_path",
    "read_segmentation_store",
    "write_segmentation_store",
    "Volume",
    "VolumeError",
    "list_arrays",
    "open_volume",
    "parse_volume_spec",
    "read_array",
    "volume_format",
]
