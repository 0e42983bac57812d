"""EM phantoms: synthetic neuropil volumes with exact truth.

:func:`make_phantom` grows densely packed, branching neurites of realistic
calibre (thin axons with bouton swellings, thicker dendrites) through a volume
given in physical units, partitions space between them, and renders an
electron-microscopy-like image: textured grey cytoplasm, dark membranes,
mitochondria with cristae, polyadic synapses (cleft, postsynaptic densities,
T-bar, vesicle cloud), PSF blur, per-section intensity drift, Poisson-Gaussian
noise and, on request, missing or shifted sections. Pure numpy / scipy.

Truth convention: ``neurons`` holds a neuron id at *every* voxel (dense, no 0,
membrane voxels included, each carrying the id of the neurite on its side of
the boundary); ``membranes`` marks the membrane voxels separately. To get
ISBI / CREMI style truth (0 = membrane) use ``np.where(p.membranes, 0, p.neurons)``.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _phantom_geometry as geometry
from . import _phantom_partition as partition
from . import _phantom_render as render
from ._phantom_organelles import SYNAPSE_DTYPE, add_mitochondria, add_synapses, scatter_vesicles

__all__ = ["SYNAPSE_DTYPE", "Phantom", "load_phantom", "make_phantom", "save_phantom"]

_ARRAYS = ("raw", "neurons", "membranes", "mitochondria", "synapses", "synapse_table")


@dataclass
class Phantom:
    """An EM phantom volume and its exact truth, all ``(z, y, x)``.

    Attributes
    ----------
    raw : numpy.ndarray
        ``uint8`` EM image.
    neurons : numpy.ndarray
        ``uint32`` neuron ids, dense: every voxel, membranes included, has an
        id >= 1 (ids are consecutive from 1).
    membranes : numpy.ndarray
        ``bool`` mask of the cell-membrane voxels (the voxels at the boundary
        between two neurons, one on each side).
    mitochondria : numpy.ndarray
        ``uint32`` mitochondrion ids, 0 = none.
    synapses : numpy.ndarray
        ``uint32`` synapse ids, 0 = none: the contact voxels of each synaptic
        cleft (both sides) and the postsynaptic densities.
    synapse_table : numpy.ndarray
        Structured array (:data:`SYNAPSE_DTYPE`), one row per presynaptic ->
        postsynaptic partner pair: ``id``, cleft centre ``z, y, x`` in voxel
        coordinates, ``pre`` and ``post`` neuron ids. A polyadic synapse with
        three partners has three rows sharing its ``id``.
    voxel_size : tuple of float
        Voxel size in nm, ``(z, y, x)``.
    metadata : dict
        Generation parameters (seed, artefacts applied, ...).
    """

    raw: np.ndarray
    neurons: np.ndarray
    membranes: np.ndarray
    mitochondria: np.ndarray
    synapses: np.ndarray
    synapse_table: np.ndarray
    voxel_size: tuple[float, float, float]
    metadata: dict = field(default_factory=dict)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_shape(shape) -> tuple[int, int, int]:
    ok = isinstance(shape, Iterable) and not isinstance(shape, str)
    items = tuple(shape) if ok else ()
    if len(items) != 3 or not all(_is_int(v) and v > 0 for v in items):
        raise ValueError(f"shape must be 3 positive integers (z, y, x); got {shape!r}")
    return tuple(int(v) for v in items)


def _check_voxel_size(voxel_size) -> tuple[float, float, float]:
    ok = isinstance(voxel_size, Iterable) and not isinstance(voxel_size, str)
    items = tuple(voxel_size) if ok else ()
    good = len(items) == 3 and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0
        for v in items
    )
    if not good:
        raise ValueError(
            f"voxel_size must be 3 positive numbers in nm (z, y, x), e.g. (40, 4, 4); "
            f"got {voxel_size!r}"
        )
    return tuple(float(v) for v in items)


def _check_sections(sections, nz: int, name: str) -> list[int]:
    if isinstance(sections, str) or not isinstance(sections, Iterable):
        raise ValueError(f"{name} must be a sequence of section indices; got {sections!r}")
    out = []
    for z in sections:
        if not _is_int(z) or not -nz <= z < nz:
            raise ValueError(
                f"{name}: section index {z!r} is out of range; the volume has {nz} sections, "
                f"so indices must be integers in [0, {nz - 1}] (or negative from the end)"
            )
        out.append(int(z) % nz)
    return sorted(set(out))


def _check_number(value, name: str, lo: float = 0.0, hi: float = np.inf) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be a number in [{lo}, {hi}]; got {value!r}")
    return float(value)


def _blur_sigma(blur, voxel_size) -> tuple[float, float, float]:
    vs = np.asarray(voxel_size)
    if blur is None:
        fine = render.fine_axes(vs)
        return tuple(float(max(2.0, 0.6 * vs[a])) if a in fine else 0.0 for a in range(3))
    if isinstance(blur, numbers.Real) and not isinstance(blur, bool) and blur >= 0:
        return (0.0, float(blur), float(blur))
    try:
        items = tuple(float(_check_number(b, "blur")) for b in blur)
    except (TypeError, ValueError):
        items = ()
    if len(items) != 3:
        raise ValueError(
            f"blur must be None, a sigma in nm (>= 0) or 3 sigmas (z, y, x); got {blur!r}"
        )
    return items


def _shifts(shifted_sections, nz: int, max_shift: float, rng) -> dict[int, tuple[int, int]]:
    if isinstance(shifted_sections, Mapping):
        zs = _check_sections(list(shifted_sections), nz, "shifted_sections")
        out = {}
        for z_in, d in shifted_sections.items():
            d = tuple(d) if isinstance(d, Iterable) else ()
            if len(d) != 2 or not all(_is_int(v) for v in d):
                raise ValueError(
                    f"shifted_sections: the shift of section {z_in} must be two integers "
                    f"(dy, dx) in pixels; got {shifted_sections[z_in]!r}"
                )
            out[int(z_in) % nz] = (int(d[0]), int(d[1]))
        return {z: out[z] for z in zs}
    out = {}
    for z in _check_sections(shifted_sections, nz, "shifted_sections"):
        while True:
            d = np.rint(rng.uniform(-max_shift, max_shift, 2)).astype(int)
            if np.abs(d).max() >= max(1.0, 0.4 * max_shift):
                break
        out[z] = (int(d[0]), int(d[1]))
    return out


def make_phantom(
    shape=(32, 256, 256),
    voxel_size=(40.0, 4.0, 4.0),
    seed=0,
    *,
    noise: float = 0.05,
    blur=None,
    drift: float = 1.0,
    mitochondria: float = 0.05,
    synapse_density: float = 4.0,
    neurite_scale: float = 1.0,
    modality: str = "auto",
    missing_sections=(),
    missing_fill: str = "black",
    shifted_sections=(),
    max_shift: float = 12.0,
) -> Phantom:
    """Make an EM phantom of neuropil with its exact truth.

    Parameters
    ----------
    shape : tuple of 3 int
        Volume shape ``(z, y, x)``.
    voxel_size : tuple of 3 float
        Voxel size in nm ``(z, y, x)``: e.g. ``(40, 4, 4)`` for serial-section
        TEM or ``(8, 8, 8)`` for FIB-SEM. Structures have physical sizes, so the
        same shape at a larger voxel size shows a larger field of view.
    seed : int or None
        Random seed; the same seed and arguments give identical arrays.
    noise : float
        Acquisition noise (Poisson-Gaussian), as the standard deviation at mid
        grey in units of the full 0-255 range; 0 turns it off.
    blur : None, float or tuple of 3 float
        Gaussian PSF sigma in nm. ``None``: 0.6 voxel (at least 2 nm) along the finely
        sampled axes and none across thick sections; a number: in-plane sigma;
        3 numbers: ``(z, y, x)`` sigmas. With thick sections the in-plane sigma
        also varies from section to section (focus changes).
    drift : float
        Strength of the per-section brightness / contrast drift and of the slow
        lateral intensity gradients (1 = typical, 0 = none).
    mitochondria : float
        Target volume fraction of mitochondria (0 to 0.3).
    synapse_density : float
        Presynaptic sites per cubic micrometre.
    neurite_scale : float
        Multiplies all neurite radii (0.5 to 2).
    modality : {"auto", "sstem", "fibsem"}
        Contrast style: serial-section TEM (mid-grey cytoplasm, thin crisp
        membranes) or FIB-SEM (bright cytoplasm, heavy dark membranes).
        ``"auto"`` picks ``"sstem"`` when the z voxel size is at least 2.5 times
        the in-plane one, else ``"fibsem"``.
    missing_sections : sequence of int
        Sections to blank in ``raw`` (truth is kept, as the tissue is still there).
    missing_fill : {"black", "noise"}
        What a missing section shows.
    shifted_sections : sequence of int or mapping of int to (dy, dx)
        Sections translated in xy (image *and* truth, so that the truth
        matches what the section shows); with a plain sequence, random shifts
        of up to ``max_shift`` pixels are drawn. ``synapse_table`` keeps the
        unshifted coordinates.
    max_shift : float
        Largest random shift in pixels.

    Returns
    -------
    Phantom
        The image and its truth.

    Raises
    ------
    ValueError
        If an argument is malformed or out of range; the message says what was
        given and what is expected.
    """
    shape = _check_shape(shape)
    vs = _check_voxel_size(voxel_size)
    if seed is not None and not (_is_int(seed) and seed >= 0):
        raise ValueError(f"seed must be a non-negative integer or None; got {seed!r}")
    noise = _check_number(noise, "noise", 0.0, 1.0)
    drift = _check_number(drift, "drift", 0.0, 10.0)
    mito_fraction = _check_number(mitochondria, "mitochondria", 0.0, 0.3)
    synapse_density = _check_number(synapse_density, "synapse_density", 0.0, 100.0)
    neurite_scale = _check_number(neurite_scale, "neurite_scale", 0.5, 2.0)
    max_shift = _check_number(max_shift, "max_shift", 0.0, 1e4)
    sigma = _blur_sigma(blur, vs)
    missing_z = _check_sections(missing_sections, shape[0], "missing_sections")
    if modality not in ("auto", "sstem", "fibsem"):
        raise ValueError(f"modality must be 'auto', 'sstem' or 'fibsem'; got {modality!r}")
    if modality == "auto":
        modality = "sstem" if vs[0] >= 2.5 * min(vs[1:]) else "fibsem"
    style = render.STYLES[modality]
    if missing_fill not in ("black", "noise"):
        raise ValueError(f"missing_fill must be 'black' or 'noise'; got {missing_fill!r}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    rng_geo, rng_warp, rng_img, rng_org, rng_noise, rng_art = streams
    shifts = _shifts(shifted_sections, shape[0], max_shift, rng_art)

    # geometry: neurites, dense partition, smooth full-resolution labels
    extent = np.asarray(shape) * np.asarray(vs)
    neurites = geometry.grow_neurites(extent, rng_geo, neurite_scale)
    factors = partition.coarse_factors(vs)
    coarse = partition.partition(neurites, shape, vs, factors)
    bend = []
    for a, plane in ((1, (shape[0], 1, shape[2])), (2, (shape[0], shape[1], 1))):
        amp = 14.0 / vs[a] if factors[a] > 1 else 0.0
        field_ = geometry.smooth_field(plane, vs, 220.0, rng_warp) * amp
        bend.append(np.rint(field_[:, 0] if a == 1 else field_[:, :, 0]).astype(np.intp))
    labels = partition.refine(coarse, shape, factors, tuple(bend))
    present = np.bincount(labels.ravel()) > 0
    lut = np.zeros(present.size, np.uint32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    neurons = lut[labels]
    del labels
    walker_lut = np.zeros(int(neurites.neuron.max()) + 1, np.uint32)
    walker_lut[: lut.size] = lut[: walker_lut.size]
    membranes = render.boundaries(neurons, render.fine_axes(vs), 1)

    # image formation
    img = render.base_image(neurons, int(present.sum()), membranes, vs, rng_img, style)
    mito = add_mitochondria(
        img,
        neurons,
        membranes,
        vs,
        neurites,
        walker_lut,
        rng_org,
        mito_fraction,
        style["mito_gain"],
    )
    synapses, table, vesicles = add_synapses(
        img,
        neurons,
        membranes,
        vs,
        neurites,
        walker_lut,
        rng_org,
        synapse_density,
        style["synapse_gain"],
    )
    more = scatter_vesicles(neurons, vs, neurites, walker_lut, rng_org)
    vesicles = np.concatenate([vesicles, np.reshape(more, (-1, 3))])
    render.add_vesicles(img, vesicles, vs, rng_org, style)
    render.add_speckle(img, membranes, vs, rng_org, style)
    render.drift(img, vs, rng_noise, drift * style["drift"])
    render.add_noise(img, noise, rng_noise, style["grain"])
    img = render.blur(img, sigma, vs, rng_noise)
    raw = render.to_uint8(img)
    del img

    # artefacts
    for z, (dy, dx) in shifts.items():
        render.shift_section((raw, neurons, membranes, mito, synapses), z, dy, dx)
    render.missing(raw, missing_z, missing_fill, rng_art)
    metadata = {
        "seed": seed,
        "shape": list(shape),
        "voxel_size": list(vs),
        "noise": noise,
        "blur_sigma_nm": list(sigma),
        "drift": drift,
        "mitochondria": mito_fraction,
        "synapse_density": synapse_density,
        "neurite_scale": neurite_scale,
        "modality": modality,
        "missing_sections": missing_z,
        "missing_fill": missing_fill,
        "shifted_sections": {str(z): list(d) for z, d in shifts.items()},
        "generator": "napari_connectome.synthetic.make_phantom",
    }
    return Phantom(raw, neurons, membranes, mito, synapses, table, vs, metadata)


def save_phantom(phantom: Phantom, path) -> None:
    """Save a phantom to one compressed ``.npz`` file.

    Parameters
    ----------
    phantom : Phantom
        The phantom to save.
    path : str or os.PathLike
        Destination; arrays ``raw, neurons, membranes, mitochondria, synapses,
        synapse_table, voxel_size`` (and ``metadata`` as JSON text) are written.
    """
    arrays = {name: getattr(phantom, name) for name in _ARRAYS}
    np.savez_compressed(
        Path(path),
        **arrays,
        voxel_size=np.asarray(phantom.voxel_size, np.float64),
        metadata=np.array(json.dumps(phantom.metadata)),
    )


def load_phantom(path) -> Phantom:
    """Load a phantom written by :func:`save_phantom`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.

    Returns
    -------
    Phantom
        The phantom.

    Raises
    ------
    ValueError
        If the file lacks one of the phantom arrays.
    """
    with np.load(Path(path), allow_pickle=False) as data:
        missing = [n for n in (*_ARRAYS, "voxel_size") if n not in data.files]
        if missing:
            raise ValueError(f"{path} is not a phantom file: it lacks {', '.join(missing)}")
        arrays = {name: data[name] for name in _ARRAYS}
        vs = tuple(float(v) for v in data["voxel_size"])
        meta = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
    arrays["membranes"] = arrays["membranes"].astype(bool)
    return Phantom(**arrays, voxel_size=vs, metadata=meta)
