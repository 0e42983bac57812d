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
    "DataSource",
    "PatchSampler",  # re-exported from .augment
    "PlaneSample",
    "default_sources",
    "label_boundaries",
    "make_training_samples",
    "npz_shape",
    "phantom_volumes",
    "source_targets",
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
    data_dir = Path(data_dir)
    candidates = [
        DataSource(str(data_dir / "isbi2012_cardona_3d.npz"), (50.0, 4.0, 4.0), holdout_last=10),
        DataSource(str(data_dir / "drosophila_vnc_stack1.npz"), (50.0, 4.6, 4.6), holdout_last=5),
        DataSource(
            str(data_dir / "gala_fib_train.npz"),
            (10.0, 10.0, 10.0),
            membranes=None,
            labels="labels",
            holdout_last=10,
        ),
    ]
    return [s for s in candidates if Path(s.path).is_file()]


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
        from ..synthetic import make_phantom
    except ImportError:
        return []
    accepted = inspect.signature(make_phantom).parameters
    out = []
    for i in range(count):
        if i % 2 == 0:
            pixel = (4.0, 5.0, 4.5, 6.0)[(i // 2) % 4]
            voxel, vshape = (40.0, pixel, pixel), tuple(shape)
        else:
            pixel = (8.0, 10.0, 6.0)[(i // 2) % 3]
            side = max(32, shape[1] // 2)
            voxel, vshape = (pixel, pixel, pixel), (side, side, side)
        kwargs = {"shape": vshape, "voxel_size": voxel, "seed": seed + i}
        phantom = make_phantom(**{k: v for k, v in kwargs.items() if k in accepted})
        out.append(
            {
                "name": f"phantom{i}",
                "raw": phantom.raw,
                "target": np.asarray(phantom.membranes, bool),
                "voxel_size": tuple(float(v) for v in phantom.voxel_size),
            }
        )
    return out


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
    for source in sources:
        with np.load(source.path) as archive:
            raw = np.asarray(archive[source.raw])
            target = source_targets(source, archive)
        held = set(source.held_out(raw.shape[0]))
        train = [z for z in range(raw.shape[0]) if z not in held]
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
