"""The EM phantom: determinism, truth conventions, appearance, artefacts, I/O."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_connectome.synthetic import (
    SYNAPSE_DTYPE,
    Phantom,
    load_phantom,
    make_phantom,
    save_phantom,
)

SSTEM = (40.0, 4.0, 4.0)
FIB = (8.0, 8.0, 8.0)


@pytest.fixture(scope="module")
def sstem():
    # about 640 nm on each side, with extra synapses so the table is well populated
    return make_phantom((16, 160, 160), SSTEM, seed=3, synapse_density=30.0)


@pytest.fixture(scope="module")
def fib():
    return make_phantom((32, 80, 80), FIB, seed=1)


def _arrays(p: Phantom):
    return {n: getattr(p, n) for n in ("raw", "neurons", "membranes", "mitochondria", "synapses")}


def test_same_seed_gives_identical_arrays():
    a = make_phantom((8, 64, 64), SSTEM, seed=5)
    b = make_phantom((8, 64, 64), SSTEM, seed=5)
    for name, arr in _arrays(a).items():
        np.testing.assert_array_equal(arr, getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(a.synapse_table, b.synapse_table)


def test_different_seed_gives_different_volume():
    a = make_phantom((8, 64, 64), SSTEM, seed=5)
    b = make_phantom((8, 64, 64), SSTEM, seed=6)
    assert not np.array_equal(a.raw, b.raw)
    assert not np.array_equal(a.neurons, b.neurons)


@pytest.mark.parametrize(
    "shape, voxel_size",
    [
        ((8, 64, 64), SSTEM),
        ((16, 48, 64), FIB),
        ((1, 8, 8), SSTEM),
        ((5, 33, 47), (30.0, 5.0, 5.0)),
        ((4, 4, 120), (10.0, 10.0, 10.0)),
    ],
)
def test_shapes_and_dtypes(shape, voxel_size):
    p = make_phantom(shape, voxel_size, seed=0)
    assert p.raw.shape == p.neurons.shape == p.membranes.shape == shape
    assert p.mitochondria.shape == p.synapses.shape == shape
    assert p.raw.dtype == np.uint8
    assert p.neurons.dtype == p.mitochondria.dtype == p.synapses.dtype == np.uint32
    assert p.membranes.dtype == bool
    assert p.synapse_table.dtype == SYNAPSE_DTYPE
    assert p.voxel_size == tuple(float(v) for v in voxel_size)
    assert all(isinstance(v, float) for v in p.voxel_size)


@pytest.mark.parametrize("which", ["sstem", "fib"])
def test_neurons_are_dense_with_consecutive_ids(which, request):
    p = request.getfixturevalue(which)
    assert p.neurons.min() >= 1  # every voxel, membranes included, has a neuron
    ids = np.unique(p.neurons)
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))
    assert 0.02 < p.membranes.mean() < 0.25
    # membrane voxels are exactly those touching another neuron in-plane (or in z if fine)
    n = p.neurons
    touching = np.zeros(n.shape, bool)
    d = n[:, :, 1:] != n[:, :, :-1]
    touching[:, :, 1:] |= d
    touching[:, :, :-1] |= d
    assert np.all(p.membranes[touching])


def test_membranes_are_dark_and_mitochondria_darker_than_cytoplasm(sstem, fib):
    for p in (sstem, fib):
        raw = p.raw.astype(float)
        cyto = ~p.membranes & (p.mitochondria == 0) & (p.synapses == 0)
        cyto &= ~ndi.binary_dilation(p.membranes, iterations=2)
        assert raw[p.membranes].mean() < raw[cyto].mean() - 35
        assert p.mitochondria.max() > 0
        assert raw[p.mitochondria > 0].mean() < raw[cyto].mean() - 25


def test_neurites_have_physical_calibre():
    # the same shape at two voxel sizes shows different fields of view, and the
    # neurite cross-sections keep their size in nm
    for voxel_size in (SSTEM, FIB):
        p = make_phantom((16, 128, 128), voxel_size, seed=2)
        areas = []
        for z in range(0, 16, 4):
            lab, n = ndi.label(~p.membranes[z])
            areas += list(np.bincount(lab.ravel())[1:])
        diameter = 2 * np.sqrt(np.array(areas) * voxel_size[1] * voxel_size[2] / np.pi)
        assert 70 < np.median(diameter) < 500, (voxel_size, np.median(diameter))


def test_most_neurons_span_many_sections(sstem):
    n = sstem.neurons
    nz = n.shape[0]
    volume = np.bincount(n.ravel())
    spans = np.zeros(volume.size, int)
    for i in range(1, volume.size):
        zs = np.flatnonzero(np.any(n == i, axis=(1, 2)))
        spans[i] = zs.max() - zs.min() + 1
    long = spans >= nz // 2
    assert volume[long].sum() >= 0.6 * volume.sum()
    assert sstem.neurons.max() >= 10


def test_synapse_table_matches_the_volume(sstem):
    table, syn, neurons = sstem.synapse_table, sstem.synapses, sstem.neurons
    assert len(table) > 0
    ids_volume = set(np.unique(syn)) - {0}
    assert ids_volume == set(np.unique(table["id"]).tolist())
    assert np.all(table["pre"] != table["post"])
    assert np.all((table["pre"] > 0) & (table["post"] > 0))
    for sid in np.unique(table["id"]):
        rows = table[table["id"] == sid]
        assert 1 <= len(rows) <= 4
        assert len(set(rows["pre"].tolist())) == 1  # one presynaptic partner
        assert len(set(rows["post"].tolist())) == len(rows)
        touching = set(np.unique(neurons[syn == sid]).tolist())
        assert int(rows["pre"][0]) in touching
        assert set(rows["post"].tolist()) <= touching
        for a, n in zip("zyx", syn.shape, strict=True):
            assert np.all((rows[a] >= 0) & (rows[a] <= n - 1))
        # the centre lies near the synapse voxels
        vox = np.argwhere(syn == sid)
        centre = np.array([rows["z"][0], rows["y"][0], rows["x"][0]])
        assert np.min(np.abs(vox - centre).sum(axis=1)) < 40


def test_missing_sections_blank_only_those_sections():
    base = make_phantom((10, 64, 64), SSTEM, seed=4)
    p = make_phantom((10, 64, 64), SSTEM, seed=4, missing_sections=[2, 7])
    assert np.all(p.raw[2] == 0) and np.all(p.raw[7] == 0)
    others = [z for z in range(10) if z not in (2, 7)]
    np.testing.assert_array_equal(p.raw[others], base.raw[others])
    np.testing.assert_array_equal(p.neurons, base.neurons)  # the tissue is still there
    noisy = make_phantom((10, 64, 64), SSTEM, seed=4, missing_sections=[-1], missing_fill="noise")
    assert noisy.raw[9].std() > 5 and not np.array_equal(noisy.raw[9], base.raw[9])
    np.testing.assert_array_equal(noisy.raw[:9], base.raw[:9])
    assert noisy.metadata["missing_sections"] == [9]


def test_shifted_sections_translate_only_those_sections():
    base = make_phantom((10, 64, 64), SSTEM, seed=4)
    p = make_phantom((10, 64, 64), SSTEM, seed=4, shifted_sections={3: (4, -6)})
    np.testing.assert_array_equal(p.raw[3, 4:, :-6], base.raw[3, :-4, 6:])
    np.testing.assert_array_equal(p.neurons[3, 4:, :-6], base.neurons[3, :-4, 6:])
    others = [z for z in range(10) if z != 3]
    np.testing.assert_array_equal(p.raw[others], base.raw[others])
    np.testing.assert_array_equal(p.neurons[others], base.neurons[others])
    q = make_phantom((10, 64, 64), SSTEM, seed=4, shifted_sections=[5], max_shift=8)
    dy, dx = q.metadata["shifted_sections"]["5"]
    assert 0 < max(abs(dy), abs(dx)) <= 8
    assert not np.array_equal(q.raw[5], base.raw[5])
    np.testing.assert_array_equal(q.raw[:5], base.raw[:5])
    np.testing.assert_array_equal(q.raw[6:], base.raw[6:])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"shape": (64, 64)}, "shape must be 3 positive integers"),
        ({"shape": (8, 0, 64)}, "(8, 0, 64)"),
        ({"shape": (8.5, 64, 64)}, "shape must be 3 positive integers"),
        ({"shape": "8x64x64"}, "shape must be"),
        ({"voxel_size": (40, 4)}, "voxel_size must be 3 positive numbers"),
        ({"voxel_size": (40, -4, 4)}, "(40, -4, 4)"),
        ({"voxel_size": (40, 0, 4)}, "voxel_size must be"),
        ({"missing_sections": [8]}, "out of range"),
        ({"shifted_sections": [0, 99]}, "[0, 7]"),
        ({"shifted_sections": {2: (1,)}}, "two integers"),
        ({"missing_fill": "grey"}, "missing_fill"),
        ({"modality": "xray"}, "modality"),
        ({"noise": -1}, "noise must be"),
        ({"seed": -3}, "seed"),
        ({"blur": (1, 2)}, "blur"),
    ],
)
def test_bad_arguments_raise_helpful_errors(kwargs, fragment):
    args = {"shape": (8, 32, 32), "voxel_size": SSTEM, **kwargs}
    with pytest.raises(ValueError) as info:
        make_phantom(**args)
    assert fragment in str(info.value)


def test_modalities_and_blur_options():
    shape = (6, 48, 48)
    tem = make_phantom(shape, SSTEM, seed=0, modality="sstem", noise=0.0, drift=0.0)
    fib = make_phantom(shape, SSTEM, seed=0, modality="fibsem", noise=0.0, drift=0.0)
    assert tem.metadata["modality"] == "sstem" and fib.metadata["modality"] == "fibsem"
    assert not np.array_equal(tem.raw, fib.raw)
    np.testing.assert_array_equal(tem.neurons, fib.neurons)  # same tissue
    sharp = make_phantom(shape, SSTEM, seed=0, blur=0.0)
    soft = make_phantom(shape, SSTEM, seed=0, blur=(0.0, 12.0, 12.0))
    assert (
        np.abs(np.diff(soft.raw.astype(float), axis=2)).mean()
        < np.abs(np.diff(sharp.raw.astype(float), axis=2)).mean()
    )


def test_save_load_round_trip(tmp_path, sstem):
    path = tmp_path / "phantom.npz"
    save_phantom(sstem, path)
    back = load_phantom(path)
    for name, arr in _arrays(sstem).items():
        got = getattr(back, name)
        assert got.dtype == arr.dtype, name
        np.testing.assert_array_equal(got, arr, err_msg=name)
    np.testing.assert_array_equal(back.synapse_table, sstem.synapse_table)
    assert back.synapse_table.dtype == SYNAPSE_DTYPE
    assert back.voxel_size == sstem.voxel_size
    assert back.metadata == sstem.metadata
    with np.load(path) as data:  # plain numpy can read it, no pickle
        assert {"raw", "neurons", "synapse_table", "voxel_size"} <= set(data.files)


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, raw=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="not a phantom file"):
        load_phantom(path)
