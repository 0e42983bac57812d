"""Training data of the boundary network: planes at the canonical pixel size, and patches.

A :class:`DataSource` names an ``.npz`` volume (``raw`` plus a membrane mask or
neuron labels), its voxel size and the z-sections held out for validation.
:func:`make_training_samples` turns sources (and optional phantoms) into
:class:`PlaneSample` s: each plane normalised like at inference, then resampled
to the canonical pixel size together with its soft boundary target. Held-out
sections never enter a training plane, in any orientation.
"""

from __future__ import annotations

import inspect
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .augment import PatchSampler
from .inference import choose_planes, resample
from .tiling import normalize_plane

__all__ = [
    "REAL_VOLUMES",
    "DataSource",
    "PatchSampler",  # re-exported from .augment
    "PlaneSample",
    "default_sources",
    "held_out_volumes",
    "label_boundaries",
    "load_source",
    "make_training_samples",
    "npz_shape",
    "phantom_series",
    "phantom_volumes",
    "real_sources",
    "source_targets",
    "training_volumes",
    "volume_planes",
]


@dataclass
class DataSource:
    """One training volume in an ``.npz`` file.

    Attributes
    ----------
    path : str
        The ``.npz`` file; every array is ``(z, y, x)``.
    voxel_size : tuple of float
        Voxel size in nm ``(z, y, x)``.
    raw : str
        Name of the EM array.
    membranes : str or None
        Name of a membrane mask (nonzero = membrane), if the file has one.
    labels : str or None
        Name of a neuron label array (0 = boundary; touching ids are split by a
        boundary too), used when ``membranes`` is None.
    holdout_last : int
        Number of last z-sections held out for validation.
    holdout : list of int
        Further held-out z-sections.
    planes : str
        Orientations used, as in :func:`~napari_connectome.models.inference.choose_planes`.
    name : str or None
        Name in the training record (default: the file stem).
    """

    path: str
    voxel_size: tuple[float, float, float]
    raw: str = "raw"
    membranes: str | None = "membranes"
    labels: str | None = None
    holdout_last: int = 0
    holdout: list[int] = field(default_factory=list)
    planes: str = "auto"
    name: str | None = None

    @property
    def label(self) -> str:
        """Name of the source in records."""
        return self.name or Path(self.path).stem

    def held_out(self, depth: int) -> list[int]:
        """Held-out z-sections of a volume with ``depth`` sections."""
        last = range(max(0, depth - self.holdout_last), depth)
        return sorted({*last, *(z for z in self.holdout if 0 <= z < depth)})


#: The real volumes of the shared data folder: voxel size (nm, ``z, y, x``) and the
#: number of last z-sections held out for validation (never trained on).
REAL_VOLUMES = {
    "isbi2012_cardona_3d": ((50.0, 4.0, 4.0), 10),
    "drosophila_vnc_stack1": ((50.0, 4.6, 4.6), 5),
    "gala_fib_train": ((10.0, 10.0, 10.0), 10),
}


def real_sources(data_dir: str | Path, names, **fields) -> list[DataSource]:
    """List the named real volumes found in ``data_dir``, with their hold-outs.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        Folder of the ``<name>.npz`` files (missing files are skipped).
    names : iterable of str
        Keys of :data:`REAL_VOLUMES`.
    **fields
        Further :class:`DataSource` fields of every source (``membranes``, ``labels``...).

    Returns
    -------
    list of DataSource
        One source per file found, holding out the last sections of :data:`REAL_VOLUMES`.
    """
    out = []
    for name in names:
        voxel_size, last = REAL_VOLUMES[name]
        path = Path(data_dir) / f"{name}.npz"
        if path.is_file():
            out.append(DataSource(str(path), voxel_size, holdout_last=last, **fields))
    return out


def default_sources(data_dir: str | Path) -> list[DataSource]:
    """List the real EM volumes of ``data_dir`` used for training, with their hold-outs.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        Folder with ``isbi2012_cardona_3d.npz``, ``drosophila_vnc_stack1.npz`` and
        ``gala_fib_train.npz`` (missing files are skipped).

    Returns
    -------
    list of DataSource
        ISBI 2012 (last 10 sections held out), VNC stack 1 (last 5) and the gala
        FIB-SEM crop (last 10 z-sections; xy, xz and yz planes).
    """
    membranes = real_sources(data_dir, ("isbi2012_cardona_3d", "drosophila_vnc_stack1"))
    labels = real_sources(data_dir, ("gala_fib_train",), membranes=None, labels="labels")
    return membranes + labels


@dataclass
class PlaneSample:
    """One plane at the canonical pixel size.

    Attributes
    ----------
    image : numpy.ndarray
        Normalised ``float32`` image.
    target : numpy.ndarray
        Soft boundary target in ``[0, 1]`` (1 = boundary).
    source : str
        Name of the source volume.
    orientation : str
        ``"xy"``, ``"xz"`` or ``"yz"``.
    index : int
        Index of the plane along its normal axis.
    sections : tuple of int
        The z-sections the plane is made of.
    group : str
        Sampling group (all phantoms share one); empty: the source.
    """

    image: np.ndarray
    target: np.ndarray
    source: str
    orientation: str
    index: int
    sections: tuple[int, ...]
    group: str = ""


def npz_shape(path: str | Path, key: str) -> tuple[int, ...]:
    """Shape of an array in an ``.npz`` file, read from its header only.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.npz`` file.
    key : str
        Array name.

    Returns
    -------
    tuple of int
        The array's shape.
    """
    with zipfile.ZipFile(path) as archive, archive.open(key + ".npy") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape = np.lib.format.read_array_header_1_0(handle)[0]
        else:
            shape = np.lib.format.read_array_header_2_0(handle)[0]
    return tuple(int(n) for n in shape)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Boundary mask of a 2D label image: label 0 and both sides of touching ids.

    Parameters
    ----------
    labels : numpy.ndarray
        2D neuron ids, 0 = boundary.

    Returns
    -------
    numpy.ndarray
        ``bool`` mask.
    """
    labels = np.asarray(labels)
    boundary = labels == 0
    for axis in (0, 1):
        a = np.moveaxis(labels, axis, 0)
        b = np.moveaxis(boundary, axis, 0)
        change = (a[1:] != a[:-1]) & (a[1:] != 0) & (a[:-1] != 0)
        b[1:] |= change
        b[:-1] |= change
    return boundary


def source_targets(source: DataSource, archive) -> np.ndarray:
    """Boundary volume (``bool``) of a source: its membrane mask or its label boundaries.

    Parameters
    ----------
    source : DataSource
        The source.
    archive : mapping
        The opened ``.npz`` (or any mapping of arrays).

    Returns
    -------
    numpy.ndarray
        ``bool`` volume, True on membranes / boundaries.
    """
    if source.membranes:
        return np.asarray(archive[source.membranes]) != 0
    if not source.labels:
        raise ValueError(f"{source.label}: give either a membrane mask or a label array")
    labels = np.asarray(archive[source.labels])
    return np.stack([label_boundaries(plane) for plane in labels])


def load_source(source: DataSource, truth=source_targets) -> tuple[np.ndarray, np.ndarray]:
    """Read a source's EM volume and its truth.

    Parameters
    ----------
    source : DataSource
        The source.
    truth : callable
        ``truth(source, archive)`` gives the truth volume (default: the boundaries
        of :func:`source_targets`).

    Returns
    -------
    tuple of numpy.ndarray
        ``(raw, truth)``.
    """
    with np.load(source.path) as archive:
        return np.asarray(archive[source.raw]), truth(source, archive)


def training_volumes(sources: list[DataSource]):
    """Read each source and list the z-sections that may be trained on.

    Parameters
    ----------
    sources : list of DataSource
        Real volumes.

    Yields
    ------
    tuple
        ``(source, raw, boundaries, sections)``: the volume, its boundary target
        (:func:`source_targets`) and the sections not held out.
    """
    for source in sources:
        raw, target = load_source(source)
        held = set(source.held_out(raw.shape[0]))
        yield source, raw, target, [z for z in range(raw.shape[0]) if z not in held]


def held_out_volumes(sources: list[DataSource], truth=source_targets) -> list[dict]:
    """Read the held-out sections of each source, for validation.

    Parameters
    ----------
    sources : list of DataSource
        Real volumes; those without held-out sections are skipped.
    truth : callable
        ``truth(source, archive)``, as in :func:`load_source`.

    Returns
    -------
    list of dict
        ``{"name", "raw", "truth", "voxel_size", "sections"}`` per source.
    """
    sets = []
    for source in sources:
        raw, target = load_source(source, truth)
        held = source.held_out(raw.shape[0])
        if held:
            sets.append(
                {
                    "name": source.label,
                    "raw": raw[held],
                    "truth": target[held],
                    "voxel_size": tuple(source.voxel_size),
                    "sections": held,
                }
            )
    return sets


def _canonical(image, target, sizes, pixel, normalization) -> tuple[np.ndarray, np.ndarray]:
    shape = tuple(max(1, round(n * s / pixel)) for n, s in zip(image.shape, sizes, strict=True))
    img = torch.from_numpy(normalize_plane(image, normalization))[None, None]
    tgt = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None, None]
    img, tgt = resample(img, shape)[0, 0].numpy(), resample(tgt, shape)[0, 0].numpy()
    return np.ascontiguousarray(img), np.clip(tgt, 0.0, 1.0)


def _runs(sections: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for z in sections:
        if runs and z == runs[-1][-1] + 1:
            runs[-1].append(z)
        else:
            runs.append([z])
    return runs


def volume_planes(
    name, raw, target, voxel_size, sections, planes, pixel_size_nm, normalization=None
) -> list[PlaneSample]:
    """Planes of the given z-sections of a volume, at the canonical pixel size.

    Parameters
    ----------
    name : str
        Source name.
    raw, target : numpy.ndarray
        ``(z, y, x)`` EM volume and boundary volume.
    voxel_size : tuple of float
        Voxel size in nm ``(z, y, x)``.
    sections : list of int
        The z-sections to use; xz and yz planes span each contiguous run of them.
    planes : str
        Orientations (see ``choose_planes``).
    pixel_size_nm : float
        Canonical pixel size.
    normalization : dict, optional
        Normalisation of the model configuration.

    Returns
    -------
    list of PlaneSample
        The planes.
    """
    vz, vy, vx = voxel_size
    out = []
    for orientation in choose_planes(voxel_size, planes):
        if orientation == "xy":
            for z in sections:
                img, tgt = _canonical(raw[z], target[z], (vy, vx), pixel_size_nm, normalization)
                out.append(PlaneSample(img, tgt, name, "xy", z, (z,)))
            continue
        for run in _runs(sections):
            if len(run) * vz < 2 * pixel_size_nm:
                continue
            block, block_t = raw[run[0] : run[-1] + 1], target[run[0] : run[-1] + 1]
            axis = 1 if orientation == "xz" else 2
            size = vx if orientation == "xz" else vy
            for index in range(raw.shape[axis]):
                img, tgt = _canonical(
                    np.take(block, index, axis=axis),
                    np.take(block_t, index, axis=axis),
                    (vz, size),
                    pixel_size_nm,
                    normalization,
                )
                out.append(PlaneSample(img, tgt, name, orientation, index, tuple(run)))
    return out


def phantom_volumes(count: int, shape=(16, 384, 384), seed: int = 0) -> list[dict]:
    """Make phantom volumes alternating serial-section-like and FIB-SEM-like voxel sizes.

    Parameters
    ----------
    count : int
        Number of phantoms (0: none; also none when the phantom module is missing).
    shape : tuple of int
        Shape of the anisotropic phantoms; the isotropic ones are cubes of half
        the in-plane size.
    seed : int
        Base seed.

    Returns
    -------
    list of dict
        ``{"name", "raw", "target", "voxel_size"}`` per phantom.
    """
    if count <= 0:
        return []
    try:
        return [
            {
                "name": name,
                "raw": phantom.raw,
                "target": np.asarray(phantom.membranes, bool),
                "voxel_size": tuple(float(v) for v in phantom.voxel_size),
            }
            for name, phantom in phantom_series(count, shape, seed)
        ]
    except ImportError:  # no phantom module
        return []


def phantom_series(count: int, shape=(16, 384, 384), seed: int = 0, **options):
    """Make phantoms alternating serial-section-like and FIB-SEM-like voxel sizes.

    Parameters
    ----------
    count : int
        Number of phantoms.
    shape : tuple of int
        Shape of the anisotropic phantoms (even indices); the isotropic ones (odd
        indices) are cubes of half the in-plane size, at least 32.
    seed : int
        Base seed (phantom ``i`` uses ``seed + i``).
    **options
        Further arguments of :func:`napari_connectome.synthetic.make_phantom`.

    Yields
    ------
    tuple
        ``(name, phantom)``, named ``"phantom<i>"``, one at a time.

    Raises
    ------
    ImportError
        If the phantom module is missing (on the first phantom).
    """
    from ..synthetic import make_phantom

    accepted = inspect.signature(make_phantom).parameters
    for i in range(count):
        if i % 2 == 0:
            pixel = (4.0, 5.0, 4.5, 6.0)[(i // 2) % 4]
            voxel, vshape = (40.0, pixel, pixel), tuple(shape)
        else:
            pixel = (8.0, 10.0, 6.0)[(i // 2) % 3]
            side = max(32, shape[1] // 2)
            voxel, vshape = (pixel, pixel, pixel), (side, side, side)
        kwargs = {"shape": vshape, "voxel_size": voxel, "seed": seed + i}
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
        yield f"phantom{i}", make_phantom(**kwargs, **options)


def make_training_samples(
    sources: list[DataSource],
    *,
    pixel_size_nm: float = 8.0,
    phantoms: int = 0,
    phantom_shape=(16, 384, 384),
    seed: int = 0,
    normalization: dict | None = None,
) -> list[PlaneSample]:
    """Build the training planes of all sources (held-out sections excluded) and phantoms.

    Parameters
    ----------
    sources : list of DataSource
        Real volumes (see :func:`default_sources`).
    pixel_size_nm : float
        Canonical pixel size of the model.
    phantoms : int
        Number of phantom volumes added (see :func:`phantom_volumes`).
    phantom_shape : tuple of int
        Shape of the anisotropic phantoms.
    seed : int
        Seed of the phantoms.
    normalization : dict, optional
        Normalisation of the model configuration.

    Returns
    -------
    list of PlaneSample
        Every training plane.
    """
    samples: list[PlaneSample] = []
    for source, raw, target, train in training_volumes(sources):
        samples += volume_planes(
            source.label,
            raw,
            target,
            source.voxel_size,
            train,
            source.planes,
            pixel_size_nm,
            normalization,
        )
    for ph in phantom_volumes(phantoms, phantom_shape, seed):
        sections = list(range(ph["raw"].shape[0]))
        planes = volume_planes(
            ph["name"],
            ph["raw"],
            ph["target"],
            ph["voxel_size"],
            sections,
            "auto",
            pixel_size_nm,
            normalization,
        )
        for plane in planes:
            plane.group = "phantoms"
        samples += planes
    return samples
