"""Fixtures shared across test folders: small segmentation states and their stores."""

import numpy as np
import pytest
from scipy import ndimage as ndi

VOXEL_SIZE = (40.0, 4.0, 4.0)


def _phantom_segmentation(shape, seed, noise=0.0, voxel_size=VOXEL_SIZE):
    from napari_connectome.segmentation import segment_boundaries_state
    from napari_connectome.synthetic import make_phantom

    phantom = make_phantom(shape, voxel_size, seed=seed)
    bnd = ndi.gaussian_filter(phantom.membranes.astype(np.float32), (0, 1, 1)) * 1.5
    if noise:
        bnd += np.random.default_rng(seed).normal(0, noise, bnd.shape).astype(np.float32)
    return segment_boundaries_state(np.clip(bnd, 0, 1).astype(np.float32), voxel_size)


@pytest.fixture(scope="session")
def phantom_segmentation():
    """Build a segmentation state of a phantom's blurred membranes.

    Call it as ``phantom_segmentation(shape, seed, noise=0.0)``; the boundary map is
    the membranes blurred in-plane (sigma 1 px), times 1.5, plus Gaussian noise,
    clipped to [0, 1]. Each call builds a new state (a module caches its own).
    """
    return _phantom_segmentation


@pytest.fixture(scope="session")
def write_store():
    """Write a segmentation result to a store: ``write_store(result, path, voxel_size)``."""
    from napari_connectome.segmentation import save_result

    def write(result, path, voxel_size=VOXEL_SIZE, threshold=0.5):
        attrs = {"voxel_size": list(voxel_size), "threshold": threshold}
        return save_result(result, path, attrs=attrs)

    return write


def _polyadic_scene():
    """Pre segment 1 (x < 30) facing posts 2 (y < 30) and 3 (y >= 30) across a cleft."""
    shape = (4, 60, 60)
    seg = np.zeros(shape, np.uint32)
    seg[:, :, :30] = 1
    seg[:, :30, 30:] = 2
    seg[:, 30:, 30:] = 3
    seg[:, :, 50:] = 4  # a bystander, far from the cleft
    prob = np.zeros(shape, np.float32)
    prob[1:3, 18:42, 27:35] = 0.9  # the cleft straddles x = 30, over both posts
    pre = np.zeros(shape, np.float32)
    pre[:, :, 15:30] = 0.8  # the presynaptic side (T-bar, vesicles)
    return seg, prob, pre


@pytest.fixture
def polyadic_scene():
    """Factory of :func:`_polyadic_scene` (each call a fresh copy to change)."""
    return _polyadic_scene
