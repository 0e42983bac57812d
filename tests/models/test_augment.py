import numpy as np
import pytest

from napari_connectome.models.augment import (
    AugmentConfig,
    PatchSampler,
    flip_and_deform,
    random_scale_crop,
    scale_crop,
)


def _plane(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_random_scale_crop_is_the_shared_crop_with_a_clipped_target():
    image, target = _plane((50, 70)), 2 * _plane((50, 70), 1) - 0.5
    a = random_scale_crop(image, target, 64, np.random.default_rng(3))
    b = scale_crop([image, target], 64, np.random.default_rng(3))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], np.clip(b[1], 0, 1))
    np.testing.assert_array_equal(a[2], b[2])


@pytest.mark.parametrize("shape", [(20, 30), (100, 120)])
def test_centred_crops_hold_the_centre_and_mask_exactly_the_plane(shape):
    image = _plane(shape)
    centre = np.array([[shape[0] - 3, 2]])  # near a corner
    rng = np.random.default_rng(0)
    for _ in range(20):
        crop, mask = scale_crop([image], 48, rng, (1.0, 1.0), centre, centre_fraction=1.0)
        assert crop.shape == mask.shape == (48, 48)
        assert image[tuple(centre[0])] in crop[mask > 0]
        # the mask covers the part of the patch inside the plane, nothing else
        assert mask.sum() == min(48, shape[0]) * min(48, shape[1])
        inside = crop[mask > 0]
        assert np.isin(inside, image).all()


def test_crops_are_uniform_without_centres():
    image = _plane((80, 80))
    plain = scale_crop([image], 32, np.random.default_rng(5))
    none = scale_crop([image], 32, np.random.default_rng(5), centres=np.zeros((0, 2), int))
    unset = scale_crop([image], 32, np.random.default_rng(5), centres=None, centre_fraction=1.0)
    for other in (none, unset):
        for x, y in zip(plain, other, strict=True):
            np.testing.assert_array_equal(x, y)


def test_flip_and_deform_moves_all_arrays_alike_and_keeps_the_mask_binary():
    image = _plane((40, 40))
    mask = np.ones((40, 40), np.float32)
    config = AugmentConfig(deform_probability=1.0, deform_strength=3.0)
    a, b, m = flip_and_deform([image, image.copy(), mask], np.random.default_rng(2), config)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert not np.array_equal(a, image)
    off = AugmentConfig(flips=False, deform_probability=0.0)
    (still,) = flip_and_deform([image], np.random.default_rng(2), off)
    np.testing.assert_array_equal(still, image)


def test_sampler_without_augmentation_returns_plane_crops():
    class Plane:
        def __init__(self, image):
            self.image, self.target, self.source, self.group = image, image, "s", ""

    image = _plane((64, 64))
    images, targets, masks = PatchSampler([Plane(image)], 64, seed=0, augment=False).batch(2)
    np.testing.assert_array_equal(images[:, 0], np.stack([image, image]))
    np.testing.assert_array_equal(images, targets)
    assert masks.min() == 1
