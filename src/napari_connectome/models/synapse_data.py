"""Training data of the synapse network: two- or three-channel targets and their patches.

The synapse network is the boundary U-Net with two output channels, or three
when trained with a postsynaptic loss weight:

- channel 0, ``synapse``: the synaptic region as the truth marks it (ISBI 2012
  ``synapses`` ids, VNC stack 1 ``synapses`` mask, the phantom's cleft contacts
  and postsynaptic densities);
- channel 1, ``presynaptic``: the presynaptic neuron's voxels within
  :data:`PRE_ZONE_NM` of a synapse (T-bar and vesicle side). Only the phantom
  knows partners, so this channel is trained on phantom planes only (masked
  out of the loss elsewhere); partner assignment reads it to tell the
  presynaptic segment from the postsynaptic ones;
- channel 2, ``postsynaptic``: the postsynaptic neurons' voxels within
  :data:`PRE_ZONE_NM` of a synapse, also phantom-only; partner assignment reads
  it to tell a postsynaptic partner from a neighbour the synapse merely touches.

Planes are built like the boundary data (:func:`~.datasets.volume_planes`):
normalised, resampled to the canonical pixel size; held-out sections never
enter a training plane. :class:`SynapsePatchSampler` draws patches with the
boundary model's augmentations (:mod:`~.augment`) applied to both channels.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .augment import PatchSampler, augment_patch, flip_and_deform, scale_crop
from .datasets import (
    DataSource,
    phantom_series,
    real_sources,
    training_volumes,
    volume_planes,
)

__all__ = [
    "PRE_ZONE_NM",
    "SynapsePatchSampler",
    "SynapsePlane",
    "default_synapse_sources",
    "make_synapse_samples",
    "phantom_synapse_volumes",
    "partner_zone",
]

#: Reach (nm) of the partner targets around each synapse, inside the partner neurons.
PRE_ZONE_NM = 120.0


def default_synapse_sources(data_dir: str | Path) -> list[DataSource]:
    """Real volumes with synapse annotations in ``data_dir``, with their hold-outs.

    Parameters
    ----------
    data_dir : str or pathlib.Path
        Folder with ``isbi2012_cardona_3d.npz`` and ``drosophila_vnc_stack1.npz``
        (missing files are skipped).

    Returns
    -------
    list of DataSource
        ISBI 2012 (z 20-29 held out) and VNC stack 1 (z 15-19 held out), each with
        ``membranes="synapses"`` so that :func:`~.datasets.source_targets` reads the
        synapse mask.
    """
    names = ("isbi2012_cardona_3d", "drosophila_vnc_stack1")
    return real_sources(data_dir, names, membranes="synapses")


def partner_zone(
    synapses: np.ndarray,
    neurons: np.ndarray,
    table: np.ndarray,
    voxel_size,
    side: str = "pre",
    reach_nm: float = PRE_ZONE_NM,
) -> np.ndarray:
    """Partner-side mask: the partner neurons' voxels near each synapse.

    ``side="pre"`` marks the presynaptic neuron (T-bar and vesicle side);
    ``side="post"`` the postsynaptic ones, its mirror: a neighbour that touches the
    synapse without being a partner stays outside, so the network has to tell
    partners from bystanders by neuron, not by the extent of a density.

    Parameters
    ----------
    synapses : numpy.ndarray
        ``(z, y, x)`` synapse ids (0 = none).
    neurons : numpy.ndarray
        Neuron ids of the same shape.
    table : numpy.ndarray
        Rows with fields ``id`` and ``pre`` (and ``post`` for ``side="post"``), one
        per partner pair, e.g. the phantom's ``synapse_table``.
    voxel_size : sequence of float
        Voxel size in nm.
    side : {"pre", "post"}
        Which partners.
    reach_nm : float
        Largest distance (nm) from the synapse.

    Returns
    -------
    numpy.ndarray
        ``bool`` mask of the same shape.
    """
    if side not in ("pre", "post"):
        raise ValueError(f"side must be 'pre' or 'post'; got {side!r}")
    members: dict[int, set[int]] = {}
    for row in table:
        members.setdefault(int(row["id"]), set()).add(int(row[side]))
    vs = np.asarray(voxel_size, float)
    out = np.zeros(synapses.shape, bool)
    margin = np.ceil(reach_nm / vs).astype(int) + 1
    for index, box in enumerate(ndi.find_objects(synapses)):
        if box is None or (index + 1) not in members:
            continue
        grown = tuple(
            slice(max(0, s.start - m), min(n, s.stop + m))
            for s, m, n in zip(box, margin, synapses.shape, strict=True)
        )
        region = synapses[grown] == index + 1
        dist = ndi.distance_transform_edt(~region, sampling=vs)
        out[grown] |= (dist <= reach_nm) & np.isin(neurons[grown], list(members[index + 1]))
    return out


def phantom_synapse_volumes(
    count: int, shape=(24, 384, 384), seed: int = 0, sides=("pre",)
) -> list[dict]:
    """Phantoms with synapse and partner targets, alternating ssTEM and FIB-SEM voxels.

    Parameters
    ----------
    count : int
        Number of phantoms (0: none).
    shape : tuple of int
        Shape of the anisotropic phantoms; the isotropic ones are cubes of half the
        in-plane size.
    seed : int
        Base seed (phantom ``i`` uses ``seed + i``).
    sides : sequence of {"pre", "post"}
        The partner zones to compute (:func:`partner_zone`), in this order.

    Returns
    -------
    list of dict
        ``{"name", "raw", "synapse", "sides", "voxel_size", "phantom"}`` per phantom,
        ``sides`` the tuple of partner-zone masks.
    """
    out = []
    for name, ph in phantom_series(count, shape, seed, synapse_density=10.0):
        vs = tuple(float(v) for v in ph.voxel_size)
        out.append(
            {
                "name": name,
                "raw": ph.raw,
                "synapse": ph.synapses > 0,
                "sides": tuple(
                    partner_zone(ph.synapses, ph.neurons, ph.synapse_table, vs, side)
                    for side in sides
                ),
                "voxel_size": vs,
                "phantom": ph,
            }
        )
    return out


@dataclass
class SynapsePlane:
    """One training plane at the canonical pixel size.

    Attributes
    ----------
    image : numpy.ndarray
        Normalised ``float32`` image ``(h, w)``.
    target : numpy.ndarray
        ``(2, h, w)`` or ``(3, h, w)`` soft targets: synapse, presynaptic side (and
        postsynaptic side).
    pre_supervised : bool
        Whether the partner channels (all but the first) have truth on this plane
        (phantoms only).
    source : str
        Name of the source volume.
    group : str
        Sampling group (all phantoms share one).
    """

    image: np.ndarray
    target: np.ndarray
    pre_supervised: bool
    source: str
    group: str = ""


def _planes(
    name, raw, synapse, zones, channels, voxel_size, sections, planes, pixel, norm, group=""
):
    """Planes of one volume with ``channels`` targets: the synapse, then partner zones.

    ``zones`` holds the partner-zone masks; none means no partner truth (zero planes,
    masked out of the loss).
    """
    syn = volume_planes(name, raw, synapse, voxel_size, sections, planes, pixel, norm)
    zone_planes = [
        volume_planes(name, raw, m, voxel_size, sections, planes, pixel, norm) for m in zones
    ]
    out = []
    for k, p in enumerate(syn):
        sides = [z[k].target for z in zone_planes] or [0 * p.target] * (channels - 1)
        out.append(SynapsePlane(p.image, np.stack([p.target, *sides]), bool(zones), name, group))
    return out


def make_synapse_samples(
    sources: list[DataSource],
    *,
    pixel_size_nm: float = 8.0,
    phantoms: int = 0,
    phantom_shape=(24, 384, 384),
    seed: int = 0,
    normalization: dict | None = None,
    postsynaptic: bool = False,
) -> list[SynapsePlane]:
    """Training planes of the synapse network (held-out sections excluded).

    Parameters
    ----------
    sources : list of DataSource
        Real volumes (see :func:`default_synapse_sources`).
    pixel_size_nm : float
        Canonical pixel size of the model.
    phantoms : int
        Number of phantoms added (see :func:`phantom_synapse_volumes`).
    phantom_shape : tuple of int
        Shape of the anisotropic phantoms.
    seed : int
        Seed of the phantoms.
    normalization : dict, optional
        Normalisation of the model configuration.
    postsynaptic : bool
        Add the postsynaptic target (three channels instead of two).

    Returns
    -------
    list of SynapsePlane
        Every training plane.
    """
    sides = ("pre", "post") if postsynaptic else ("pre",)
    samples: list[SynapsePlane] = []
    for source, raw, target, train in training_volumes(sources):
        samples += _planes(
            source.label,
            raw,
            target,
            (),
            1 + len(sides),
            source.voxel_size,
            train,
            source.planes,
            pixel_size_nm,
            normalization,
        )
    for ph in phantom_synapse_volumes(phantoms, phantom_shape, seed, sides):
        sections = list(range(ph["raw"].shape[0]))
        samples += _planes(
            ph["name"],
            ph["raw"],
            ph["synapse"],
            ph["sides"],
            1 + len(sides),
            ph["voxel_size"],
            sections,
            "auto",
            pixel_size_nm,
            normalization,
            group="phantoms",
        )
    return samples


class SynapsePatchSampler(PatchSampler):
    """Draw augmented patches of every target channel, each group of planes with an equal share.

    Parameters
    ----------
    samples : list of SynapsePlane
        Training planes.
    patch_size : int
        Edge of the square patches.
    seed : int
        Seed of the generator (patches are reproducible).
    augment : AugmentConfig or bool
        The boundary model's augmentations (True: defaults; False: crops only).
    positive_fraction : float
        Share of patches centred on a synapse pixel (synapses are sparse).
    """

    def __init__(
        self, samples, patch_size: int, seed: int = 0, augment=True, positive_fraction: float = 0.5
    ):
        super().__init__(samples, patch_size, seed, augment)
        self.positive_fraction = positive_fraction
        self.positives = [np.argwhere(s.target[0] > 0.5) for s in samples]

    def _patch(self, index: int):
        plane, rng = self.samples[index], self.rng
        parts = scale_crop(
            [plane.image, *plane.target],
            self.patch_size,
            rng,
            self._scale_range(),
            self.positives[index],
            self.positive_fraction,
        )
        if self.augment:
            parts = flip_and_deform(parts, rng, self.augment)
            # intensity changes of the image (and artefacts in the mask) only; the
            # geometric ones were just applied to all
            intensity = dataclasses.replace(self.augment, flips=False, deform_probability=0.0)
            image, syn, mask = augment_patch(
                np.array(parts[0], np.float32),
                np.array(parts[1], np.float32),
                np.array(parts[-1], np.float32),
                rng,
                intensity,
            )
            parts = [image, syn, *parts[2:-1], mask]
        image, *targets, mask = (np.ascontiguousarray(a, dtype=np.float32) for a in parts)
        return image, np.clip(np.stack(targets), 0, 1), mask

    def batch(self, size: int):
        """Draw ``size`` patches.

        Parameters
        ----------
        size : int
            Number of patches.

        Returns
        -------
        tuple of numpy.ndarray
            ``(images (n, 1, p, p), targets (n, c, p, p), masks (n, 1, p, p),
            pre_weight (n, 1, 1, 1))``, all ``float32``; ``pre_weight`` is 1 where the
            partner channels have truth.
        """
        images, targets, masks, weights = [], [], [], []
        for index in self._draw(size):
            image, target, mask = self._patch(index)
            images.append(image[None])
            targets.append(target)
            masks.append(mask[None])
            weights.append(float(self.samples[index].pre_supervised))
        return (
            np.stack(images),
            np.stack(targets),
            np.stack(masks),
            np.array(weights, np.float32).reshape(-1, 1, 1, 1),
        )
