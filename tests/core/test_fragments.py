import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from napari_connectome.core.fragments import is_anisotropic, make_fragments


def cells(shape, n_cells, seed=0, noise=0.05):
    """Voronoi cells with 2-voxel membranes: (truth with 0 on membranes, boundary map)."""
    rng = np.random.default_rng(seed)
    points = np.stack([rng.integers(0, s, n_cells) for s in shape], axis=1)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    dist = ((grid[..., None, :] - points) ** 2).sum(-1)
    truth = dist.argmin(-1) + 1
    membrane = find_boundaries(truth, mode="thick")
    truth[membrane] = 0
    bnd = ndi.gaussian_filter(membrane.astype(np.float32), 1.0) * 2.0
    bnd += rng.normal(0, noise, shape).astype(np.float32)
    return truth, np.clip(bnd, 0, 1).astype(np.float32)


def assert_pure(frags, truth):
    """Each fragment's cell-interior voxels belong to one truth cell."""
    inner = ndi.binary_erosion(truth > 0, iterations=1)
    f = frags[inner].astype(np.int64)
    t = truth[inner].astype(np.int64)
    pairs = np.unique(f * (t.max() + 1) + t)
    frag_of_pair = pairs // (t.max() + 1)
    assert np.unique(frag_of_pair).size == frag_of_pair.size, "a fragment crosses a membrane"


def test_2d_fragments_are_pure_and_cover_everything():
    truth, bnd = cells((96, 96), 6)
    frags = make_fragments(bnd, (4, 4))
    assert frags.dtype == np.uint64
    assert frags.shape == bnd.shape
    assert frags.min() >= 1
    ids = np.unique(frags)
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    assert_pure(frags, truth)
    assert ids.size >= 6


def test_anisotropic_3d_is_per_section_with_unique_ids():
    truth2d, _ = cells((64, 64), 5, seed=1)
    truth = np.repeat(truth2d[None], 4, axis=0)
    _, bnd2d = cells((64, 64), 5, seed=1)
    bnd = np.repeat(bnd2d[None], 4, axis=0)
    frags = make_fragments(bnd, (40, 4, 4))
    assert is_anisotropic((40, 4, 4))
    for z in range(4):
        others = np.concatenate([frags[k].ravel() for k in range(4) if k != z])
        assert not np.intersect1d(frags[z], others).size
    ids = np.unique(frags)
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    # ids ordered by section
    assert frags[0].max() < frags[1].min()
    assert_pure(frags, truth)


def test_isotropic_3d_fragments_span_sections():
    truth, bnd = cells((24, 40, 40), 5, seed=2)
    assert not is_anisotropic((8, 8, 8))
    frags = make_fragments(bnd, (8, 8, 8))
    assert_pure(frags, truth)
    assert np.intersect1d(frags[0], frags[1]).size > 0
    forced = make_fragments(bnd, (8, 8, 8), per_section=True)
    assert not np.intersect1d(forced[0], forced[1]).size


def test_mask_gives_zero_outside_only():
    truth, bnd = cells((3, 48, 48), 4, seed=3)
    mask = np.zeros(bnd.shape, bool)
    mask[:, 8:40, 4:30] = True
    frags = make_fragments(bnd, (50, 4, 4), mask=mask)
    assert np.all(frags[~mask] == 0)
    assert np.all(frags[mask] > 0)
    # a fully masked-out section
    mask[1] = False
    frags = make_fragments(bnd, (50, 4, 4), mask=mask)
    assert np.all(frags[1] == 0)
    ids = np.unique(frags[frags > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))


def test_min_size_merges_small_fragments():
    _, bnd = cells((80, 80), 8, seed=4, noise=0.2)
    raw = make_fragments(bnd, (4, 4), min_size=0)
    merged = make_fragments(bnd, (4, 4), min_size=40)
    assert np.bincount(raw.ravel().astype(np.intp))[1:].min() < 40
    assert np.bincount(merged.ravel().astype(np.intp))[1:].min() >= 40
    assert merged.max() < raw.max()


def test_degenerate_maps_still_label_every_voxel():
    for value in (0.0, 1.0, 0.5):
        frags = make_fragments(np.full((2, 20, 20), value, np.float32), (50, 4, 4))
        assert frags.min() >= 1
    frags = make_fragments(np.zeros((1, 1), np.float32), (4, 4))
    assert frags.tolist() == [[1]]


def test_deterministic_and_thread_independent():
    _, bnd = cells((4, 48, 48), 5, seed=5)
    a = make_fragments(bnd, (50, 4, 4), n_threads=1)
    b = make_fragments(bnd, (50, 4, 4), n_threads=2)
    c = make_fragments(bnd, (50, 4, 4))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.array([0.1, 0.2], np.float32), "2D"),
        (np.zeros((2, 2, 2, 2), np.float32), "2D"),
        (np.zeros((0, 4), np.float32), "empty"),
        (np.array([[0.1, np.nan]], np.float32), "NaN"),
        (np.array([[0.1, 1.5]], np.float32), r"\[0, 1\]"),
        (np.array([[-0.1, 0.5]], np.float32), r"\[0, 1\]"),
        (np.array([[True, False]]), "real-valued"),
    ],
)
def test_bad_boundaries_raise(data, match):
    with pytest.raises(ValueError, match=match):
        make_fragments(data, (4,) * max(data.ndim, 1))


def test_bad_arguments_raise():
    bnd = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="voxel_size"):
        make_fragments(bnd, (4, 4, 4))
    with pytest.raises(ValueError, match="voxel_size"):
        make_fragments(bnd, (0, 4))
    with pytest.raises(ValueError, match="mask shape"):
        make_fragments(bnd, (4, 4), mask=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="threshold"):
        make_fragments(bnd, (4, 4), threshold=0)


def gap_cells(seed):
    """Two cells whose membrane has a 12 px gap; noisy flat interiors."""
    rng = np.random.default_rng(seed)
    truth = np.ones((64, 96), int)
    truth[:, 48:] = 2
    membrane = np.zeros(truth.shape, bool)
    membrane[:, 46:50] = True
    membrane[:, [0, 1, -2, -1]] = True
    membrane[[0, 1, -2, -1], :] = True
    membrane[26:38, 46:50] = False  # the gap
    truth[membrane] = 0
    bnd = ndi.gaussian_filter(membrane.astype(np.float32), 1.0)
    bnd = bnd / bnd.max() + rng.normal(0, 0.1, bnd.shape)
    return truth, np.clip(bnd, 0, 1).astype(np.float32)


def leaked_voxels(frags, truth):
    """Cell voxels outside their fragment's main cell."""
    total = 0
    for f in np.unique(frags):
        counts = np.bincount(truth[(frags == f) & (truth > 0)], minlength=3)[1:]
        total += counts.sum() - counts.max()
    return total


def test_fragments_do_not_leak_through_a_membrane_gap():
    swallowed = 0
    for seed in range(8):
        truth, bnd = gap_cells(seed)
        assert leaked_voxels(make_fragments(bnd, (4, 4)), truth) < 50, seed
        plain = make_fragments(bnd, (4, 4), distance_weight=0)
        swallowed = max(swallowed, leaked_voxels(plain, truth))
    # flooding the boundary map alone lets a neighbour take a whole cell
    assert swallowed > 1000
    with pytest.raises(ValueError, match="distance_weight"):
        make_fragments(bnd, (4, 4), distance_weight=-1)
