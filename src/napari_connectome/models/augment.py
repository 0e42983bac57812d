"""Augmentation of 2D training patches (NumPy).

A training patch is an image normalised to about ``[0, 1]`` at the canonical
pixel size, a soft boundary target in ``[0, 1]`` and a loss mask (1 = counts).
What each augmentation simulates:

- random scale (0.8-1.25x, in :func:`random_scale_crop`): a different pixel size,
  or one not exactly matched by the rescaling at inference;
- flips and 90-degree rotations: the tissue has no preferred orientation;
- gamma, contrast, brightness: staining and detector differences between labs
  that per-plane normalisation does not fully remove;
- Gaussian blur and noise: focus, charging and dose differences;
- black or blank rectangles: section folds, dirt, missing tiles (masked out of
  the loss, since nothing there can be predicted);
- a mild smooth deformation: tissue distortion between preparations.

Missing and misaligned sections need no augmentation of their own, because the
network sees one section at a time:

- misalignment: the input is a single section, so a section shifted against its
  neighbours looks exactly like an aligned one to the network and is predicted
  just as well; what a shift breaks is the linking of sections in z, which
  :mod:`napari_connectome.core.sections` corrects at the volume level (shifts
  estimated by phase correlation, z contacts taken after moving sections back);
- a missing (blank) section: its boundaries cannot be learnt, only bridged.
  A whole blank patch would have to be masked out of the loss (nothing in it can
  be predicted) and would then give no gradient at all, so it is equivalent to
  not drawing the patch; partly missing data (folds, dirt, missing tiles, black
  borders of shifted sections) is what the blank-rectangle augmentation above
  covers. Whole missing sections are detected and their boundaries filled from
  the aligned neighbours at the volume level
  (:func:`napari_connectome.core.sections.fill_missing_sections`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "AugmentConfig",
    "PatchSampler",
    "augment_patch",
    "flip_and_deform",
    "random_scale_crop",
    "scale_crop",
]


@dataclass
class AugmentConfig:
    """Ranges and probabilities of the augmentations.

    Attributes
    ----------
    scale_range : tuple of float
        Range of the random zoom factor (``> 1`` magnifies).
    flips : bool
        Random flips and 90-degree rotations.
    gamma_range, contrast_range : tuple of float
        Range of the gamma exponent and of the contrast factor.
    brightness : float
        Largest additive brightness shift.
    noise_range : tuple of float
        Range of the Gaussian noise standard deviation.
    blur_probability : float
        Probability of a Gaussian blur of sigma in ``blur_range``.
    blur_range : tuple of float
        Range of the blur sigma (pixels).
    artefact_probability : float
        Probability of a black or blank rectangle (masked out of the loss).
    deform_probability : float
        Probability of a smooth random deformation.
    deform_strength : float
        Standard deviation (pixels) of the deformation's displacements.
    """

    scale_range: tuple[float, float] = (0.8, 1.25)
    flips: bool = True
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_range: tuple[float, float] = (0.7, 1.3)
    brightness: float = 0.15
    noise_range: tuple[float, float] = (0.0, 0.08)
    blur_probability: float = 0.3
    blur_range: tuple[float, float] = (0.5, 1.5)
    artefact_probability: float = 0.1
    deform_probability: float = 0.2
    deform_strength: float = 2.0


def _crop_or_pad(array: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Crop ``array[top:top+height, left:left+width]``, reflecting past the edges."""
    pads = []
    for start, size, length in ((top, height, array.shape[0]), (left, width, array.shape[1])):
        pads.append((max(0, -start), max(0, start + size - length)))
    if any(p for pair in pads for p in pair):
        mode = "reflect" if min(array.shape) > 1 else "edge"
        array = np.pad(array, pads, mode=mode)
        top, left = top + pads[0][0], left + pads[1][0]
    return array[top : top + height, left : left + width]


def scale_crop(
    arrays: list[np.ndarray],
    patch: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.8, 1.25),
    centres: np.ndarray | None = None,
    centre_fraction: float = 0.0,
) -> list[np.ndarray]:
    """Cut the same randomly placed, randomly zoomed patch out of aligned planes.

    Parameters
    ----------
    arrays : list of numpy.ndarray
        Planes of the same 2D shape (the image first, then its targets).
    patch : int
        Edge of the square output patch.
    rng : numpy.random.Generator
        Random generator.
    scale_range : tuple of float
        Range of the zoom factor, drawn log-uniformly; ``(1, 1)`` disables it.
    centres : numpy.ndarray, optional
        ``(n, 2)`` pixels ``(y, x)``: with probability ``centre_fraction`` the patch
        is centred (with a jitter of a third of its size) on one of them.
    centre_fraction : float
        Share of the patches centred on ``centres``.

    Returns
    -------
    list of numpy.ndarray
        The ``(patch, patch)`` crops of ``arrays`` followed by the ``float32`` mask,
        0 where the patch reaches past the plane (filled by reflection).
    """
    low, high = scale_range
    scale = float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else low
    size = max(2, int(round(patch / scale)))
    height, width = arrays[0].shape
    if centres is not None and len(centres) and rng.random() < centre_fraction:
        cy, cx = centres[int(rng.integers(len(centres)))]
        jitter = rng.integers(-size // 3, size // 3 + 1, 2)
        top = int(np.clip(cy + jitter[0] - size // 2, *sorted((0, height - size))))
        left = int(np.clip(cx + jitter[1] - size // 2, *sorted((0, width - size))))
    else:
        top = int(rng.integers(0, height - size + 1)) if height > size else -((size - height) // 2)
        left = int(rng.integers(0, width - size + 1)) if width > size else -((size - width) // 2)
    parts = [_crop_or_pad(a, top, left, size, size) for a in arrays]
    inside = np.zeros((size, size), np.float32)
    y0, x0 = max(0, -top), max(0, -left)
    inside[
        y0 : y0 + min(height - max(0, top), size), x0 : x0 + min(width - max(0, left), size)
    ] = 1.0
    parts.append(inside)
    if size != patch:
        zoom = patch / size
        parts = [ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="nearest") for a in parts]
        parts = [_crop_or_pad(a, 0, 0, patch, patch) for a in parts]
        parts[-1] = (parts[-1] > 0.999).astype(np.float32)
    return parts


def random_scale_crop(
    image: np.ndarray,
    target: np.ndarray,
    patch: int,
    rng: np.random.Generator,
    scale_range: tuple[float, float] = (0.8, 1.25),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a random patch out of a plane, zoomed by a random factor.

    Parameters
    ----------
    image, target : numpy.ndarray
        The plane and its boundary target (same 2D shape).
    patch : int
        Edge of the square output patch.
    rng : numpy.random.Generator
        Random generator.
    scale_range : tuple of float
        Range of the zoom factor, drawn log-uniformly; ``(1, 1)`` disables it.

    Returns
    -------
    tuple of numpy.ndarray
        ``(image, target, mask)``, each ``(patch, patch)`` ``float32``; the mask is 0
        where the patch reaches past the plane (filled by reflection).
    """
    parts = scale_crop([image, target], patch, rng, scale_range)
    img, tgt, msk = (np.ascontiguousarray(a, dtype=np.float32) for a in parts)
    return img, np.clip(tgt, 0.0, 1.0), msk


def _deform(arrays: list[np.ndarray], rng: np.random.Generator, strength: float) -> list:
    shape = arrays[0].shape
    grid = (max(2, shape[0] // 32 + 1), max(2, shape[1] // 32 + 1))
    fields = []
    for _ in range(2):
        coarse = rng.normal(0.0, strength, grid)
        fields.append(
            ndimage.zoom(coarse, (shape[0] / grid[0], shape[1] / grid[1]), order=3)[
                : shape[0], : shape[1]
            ]
        )
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    coords = [yy + fields[0], xx + fields[1]]
    return [
        ndimage.map_coordinates(a, coords, order=1, mode="reflect").astype(np.float32)
        for a in arrays
    ]


def flip_and_deform(
    arrays: list[np.ndarray], rng: np.random.Generator, config: AugmentConfig
) -> list[np.ndarray]:
    """Apply the same random flip, rotation and deformation to aligned patches.

    Parameters
    ----------
    arrays : list of numpy.ndarray
        Square patches of one shape; the last one is the loss mask (kept binary).
    rng : numpy.random.Generator
        Random generator.
    config : AugmentConfig
        ``flips``, ``deform_probability`` and ``deform_strength`` are used.

    Returns
    -------
    list of numpy.ndarray
        The transformed patches (views where no deformation was drawn).
    """
    if config.flips:
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        arrays = [np.rot90(a, k) for a in arrays]
        if flip:
            arrays = [a[:, ::-1] for a in arrays]
    if rng.random() < config.deform_probability:
        arrays = _deform([np.ascontiguousarray(a) for a in arrays], rng, config.deform_strength)
        arrays[-1] = (arrays[-1] > 0.999).astype(np.float32)
    return arrays


def augment_patch(
    image: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply random geometric and intensity augmentations to one patch.

    Parameters
    ----------
    image, target, mask : numpy.ndarray
        Square ``float32`` patch, its soft boundary target and its loss mask.
    rng : numpy.random.Generator
        Random generator (the same seed gives the same augmentation).
    config : AugmentConfig, optional
        Ranges and probabilities; defaults when omitted.

    Returns
    -------
    tuple of numpy.ndarray
        Augmented ``(image, target, mask)``; the image stays in ``[0, 1]``.
    """
    config = config or AugmentConfig()
    arrays = flip_and_deform([image, target, mask], rng, config)
    image, target, mask = (np.array(a, dtype=np.float32) for a in arrays)

    image = np.clip(image, 0.0, 1.0) ** rng.uniform(*config.gamma_range)
    mean = float(image.mean())
    image = (image - mean) * rng.uniform(*config.contrast_range) + mean
    image += rng.uniform(-config.brightness, config.brightness)
    if rng.random() < config.blur_probability:
        image = ndimage.gaussian_filter(image, rng.uniform(*config.blur_range))
    sigma = rng.uniform(*config.noise_range)
    if sigma > 0:
        image += rng.normal(0.0, sigma, image.shape).astype(np.float32)
    if rng.random() < config.artefact_probability:
        height, width = image.shape
        h = int(rng.integers(height // 8, height // 2 + 1))
        w = int(rng.integers(width // 8, width // 2 + 1))
        y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        image[y : y + h, x : x + w] = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.3, 1))
        mask[y : y + h, x : x + w] = 0.0
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return image, np.clip(target, 0.0, 1.0).astype(np.float32), mask.astype(np.float32)


class PatchSampler:
    """Draw augmented training patches from planes.

    Each group of planes (a source volume, or all phantoms together) gets the
    same share of the patches; within a group, planes are drawn in proportion
    to their area.

    Parameters
    ----------
    samples : list of PlaneSample
        Training planes.
    patch_size : int
        Edge of the square patches.
    seed : int
        Seed of the generator (patches are reproducible).
    augment : AugmentConfig or bool
        Augmentations: True for the defaults, False for none (random crops only).
    """

    def __init__(self, samples, patch_size: int, seed: int = 0, augment=True):
        if not samples:
            raise ValueError("no training planes: give data sources or phantoms")
        if augment is True:
            augment = AugmentConfig()
        self.samples, self.patch_size, self.augment = samples, patch_size, augment or None
        self.rng = np.random.default_rng(seed)
        groups = [s.group or s.source for s in samples]
        area = np.array([s.image.size for s in samples], float)
        share = {g: area[[h == g for h in groups]].sum() for g in set(groups)}
        self.weights = np.array([a / share[g] for a, g in zip(area, groups, strict=True)]) / len(
            share
        )

    def reseed(self, seed) -> None:
        """Restart the random generator (a data-loading worker's own stream).

        Parameters
        ----------
        seed : int or sequence of int
            Seed of :func:`numpy.random.default_rng`.
        """
        self.rng = np.random.default_rng(seed)

    def _draw(self, size: int) -> list[int]:
        """Draw the indices of ``size`` planes with the group-balanced weights."""
        return [int(i) for i in self.rng.choice(len(self.samples), size=size, p=self.weights)]

    def _scale_range(self) -> tuple[float, float]:
        return self.augment.scale_range if self.augment else (1.0, 1.0)

    def _patch(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        plane = self.samples[index]
        patch = random_scale_crop(
            plane.image, plane.target, self.patch_size, self.rng, self._scale_range()
        )
        if self.augment:
            patch = augment_patch(*patch, self.rng, self.augment)
        return patch

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``size`` patches.

        Parameters
        ----------
        size : int
            Number of patches.

        Returns
        -------
        tuple of numpy.ndarray
            ``(images, targets, masks)``, each ``(size, 1, patch, patch)`` ``float32``.
        """
        parts = [self._patch(index) for index in self._draw(size)]
        return tuple(np.stack([p[k] for p in parts])[:, None] for k in range(3))
