import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_connectome.models.inference import (
    PredictionCancelled,
    choose_planes,
    is_out_of_memory,
    predict_boundaries,
    symmetries,
)
from napari_connectome.models.unet import build_model, default_config
from napari_connectome.models.weights import (
    ModelFileError,
    bundled_model_path,
    save_model,
    save_torchscript,
)


def _image(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape), sigma)
    return (255 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny():
    """A tiny network with calibrated batch-norm statistics and a lively output."""
    torch.manual_seed(0)
    config = default_config(base_channels=4, depth=3)
    model = build_model(config).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model(torch.from_numpy(_image((128, 128)) / 255.0).float()[None, None])
        model.head.weight.mul_(10)
    return model.eval(), config


def _predict(volume, voxel_size, tiny, **kw):
    return predict_boundaries(volume, voxel_size, tiny, device="cpu", **kw)


def test_tiled_equals_whole(tiny):
    image = _image((300, 260))
    calls = []
    tiled = _predict(image, (8, 8), tiny, tile_size=96, progress=lambda d, t: calls.append(t))
    whole = _predict(image, (8, 8), tiny, tile_size=1024)
    assert calls[-1] > 1  # really tiled
    assert tiled.std() > 0.05  # a non-trivial output
    diff = np.abs(tiled - whole)
    assert diff.max() < 1e-3
    # no seam: the profile across tile borders is as smooth as elsewhere
    steps = np.abs(np.diff(tiled, axis=1)).mean(axis=0)
    assert steps.max() < 3 * np.median(steps) + 1e-3


def test_shapes_and_range_2d_3d(tiny):
    image = _image((45, 70))
    out = _predict(image, (8, 8), tiny)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0 <= out.min() and out.max() <= 1
    volume = np.stack([_image((33, 47), seed=s) for s in range(5)])
    for voxel in [(40, 8, 8), (50, 3.3, 5.1), (10, 10, 10), (8, 6, 12)]:
        out = _predict(volume, voxel, tiny, tile_size=96)
        assert out.shape == volume.shape


class Counting:
    """A read-only array that records what each read asks for (like a zarr array)."""

    def __init__(self, data):
        self.data, self.keys = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        self.keys.append(key)
        return self.data[key]


def _plane_axes(keys):
    return sorted({next(i for i, k in enumerate(key) if isinstance(k, int)) for key in keys})


def test_lazy_volume_read_plane_by_plane(tiny):
    volume = np.stack([_image((40, 50), seed=s) for s in range(6)])
    lazy = Counting(volume)
    out = _predict(lazy, (50, 4, 4), tiny)
    assert len(lazy.keys) == 6 and _plane_axes(lazy.keys) == [0]
    np.testing.assert_allclose(out, _predict(volume, (50, 4, 4), tiny), atol=1e-6)
    # isotropic: xy, xz and yz planes, each read on its own
    iso = Counting(volume)
    _predict(iso, (8, 8, 8), tiny)
    assert len(iso.keys) == 6 + 40 + 50 and _plane_axes(iso.keys) == [0, 1, 2]
    only_xy = Counting(volume)
    _predict(only_xy, (8, 8, 8), tiny, planes="xy")
    assert len(only_xy.keys) == 6


def test_zarr_and_dask_inputs(tiny, tmp_path):
    zarr = pytest.importorskip("zarr")
    da = pytest.importorskip("dask.array")
    volume = np.stack([_image((40, 50), seed=s) for s in range(3)])
    expected = _predict(volume, (40, 8, 8), tiny)
    z = zarr.open_array(
        str(tmp_path / "v.zarr"), mode="w", shape=volume.shape, chunks=(1, 40, 50), dtype="u1"
    )
    z[:] = volume
    np.testing.assert_allclose(_predict(z, (40, 8, 8), tiny), expected, atol=1e-6)
    d = da.from_array(volume, chunks=(1, 40, 50))
    np.testing.assert_allclose(_predict(d, (40, 8, 8), tiny), expected, atol=1e-6)


def test_choose_planes():
    assert choose_planes((40, 4, 4)) == ("xy",)
    assert choose_planes((8, 8, 8)) == ("xy", "xz", "yz")
    assert choose_planes((15, 8, 8)) == ("xy", "xz", "yz")
    assert choose_planes((8, 8, 8), "xy") == ("xy",)
    assert choose_planes((8, 8, 8), ["yz", "xy"]) == ("yz", "xy")
    with pytest.raises(ValueError, match="planes"):
        choose_planes((8, 8, 8), "zz")


def test_voxel_size_adaptation(tiny):
    """The same tissue at 4 nm and at 8 nm gives about the same boundary map."""
    fine = _image((256, 256), sigma=4.0)
    coarse = ndimage.zoom(fine.astype(np.float32), 0.5, order=1, grid_mode=True, mode="nearest")
    p_fine = _predict(fine, (4, 4), tiny)
    p_coarse = _predict(coarse, (8, 8), tiny)
    assert p_fine.shape == fine.shape and p_coarse.shape == coarse.shape
    down = p_fine.reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.corrcoef(down[8:-8, 8:-8].ravel(), p_coarse[8:-8, 8:-8].ravel())[0, 1] > 0.9
    # predicting the fine image as if it were at 8 nm is different
    wrong = _predict(fine, (8, 8), tiny).reshape(128, 2, 128, 2).mean(axis=(1, 3))
    assert np.abs(wrong - p_coarse).mean() > np.abs(down - p_coarse).mean()


class FakeOOM(torch.nn.Module):
    """Raises CUDA's out-of-memory error on batches or tiles that are too large."""

    def __init__(self, model, max_batch=99, max_side=9999):
        super().__init__()
        self.model, self.max_batch, self.max_side = model, max_batch, max_side
        self.batches = []

    def forward(self, x):
        if len(x) > self.max_batch or x.shape[-1] > self.max_side:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        self.batches.append(tuple(x.shape))
        return self.model(x)


def test_out_of_memory_backoff(tiny):
    model, config = tiny
    image = _image((400, 400))
    expected = _predict(image, (8, 8), tiny, tile_size=96)
    fake = FakeOOM(model, max_batch=2)
    with pytest.warns(RuntimeWarning, match="batch size lowered to 2"):
        out = _predict(image, (8, 8), (fake, config), tile_size=96, batch_size=8)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert max(b[0] for b in fake.batches) == 2
    fake = FakeOOM(model, max_side=130)
    with pytest.warns(RuntimeWarning, match="tiles of 128 px"):
        out = _predict(image, (8, 8), (fake, config), tile_size=256, batch_size=2)
    assert out.shape == image.shape and max(b[-1] for b in fake.batches) == 128
    never = FakeOOM(model, max_side=1)
    with pytest.raises(RuntimeError, match="out of memory"), pytest.warns(RuntimeWarning):
        _predict(image, (8, 8), (never, config), tile_size=256)
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_progress_and_cancel(tiny):
    volume = np.stack([_image((60, 60), seed=s) for s in range(4)])
    seen = []
    _predict(volume, (40, 8, 8), tiny, batch_size=1, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 4) and seen[-1] == (4, 4)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    polls = []

    def stop():
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(PredictionCancelled):
        _predict(volume, (40, 8, 8), tiny, batch_size=1, should_stop=stop)


def test_model_from_file(tiny, tmp_path):
    model, config = tiny
    path = save_model(model, config, tmp_path / "m.safetensors")
    image = _image((50, 50))
    np.testing.assert_allclose(
        _predict(image, (8, 8), str(path)), _predict(image, (8, 8), tiny), atol=1e-6
    )
    scripted = save_torchscript(model, config, tmp_path / "m.pt")
    np.testing.assert_allclose(
        _predict(image, (8, 8), str(scripted)), _predict(image, (8, 8), tiny), atol=1e-5
    )
    # a bare module without a config uses the default configuration values
    assert _predict(image, (8, 8), model).shape == image.shape
    if not bundled_model_path().is_file():
        with pytest.raises(ModelFileError, match="not installed"):
            predict_boundaries(image, (8, 8))


def test_bad_inputs(tiny):
    good = _image((20, 30))
    cases = [
        (np.zeros((2, 3, 4, 5)), (1, 1, 1), r"shape \(2, 3, 4, 5\)"),
        (np.zeros(10), (1,), r"shape \(10,\)"),
        (np.stack([good] * 3, axis=-1), (8, 8, 8), "RGB"),
        (np.full((3, 20, 30), 7, np.uint8), (40, 8, 8), r"constant \(all voxels = 7\)"),
        (np.zeros((0, 20, 30)), (40, 8, 8), "empty"),
        (good, (8, 8, 8), "3 values but the volume is 2D"),
        (good, (8, -1), "positive"),
        (good, (8, 0), "positive"),
        (good, 8, "sequence"),
        (good.astype("complex64"), (8, 8), "numeric"),
    ]
    for volume, voxel, message in cases:
        with pytest.raises(ValueError, match=message):
            _predict(volume, voxel, tiny)
    nan = good.astype(np.float32)
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _predict(nan, (8, 8), tiny)
    lazy_nan = Counting(np.stack([good, nan]).astype(np.float32))
    with pytest.raises(ValueError, match="NaN.*plane 1"):
        _predict(lazy_nan, (40, 8, 8), tiny)
    with pytest.raises(ValueError, match="constant"):
        _predict(Counting(np.ones((2, 20, 30))), (40, 8, 8), tiny)
    with pytest.raises(ValueError, match="only the 'xy' plane"):
        _predict(good, (8, 8), tiny, planes="all")
    with pytest.raises(ValueError, match="tile_size"):
        _predict(good, (8, 8), tiny, tile_size=16)
    with pytest.raises(ValueError, match="batch_size"):
        _predict(good, (8, 8), tiny, batch_size=0)


def test_tiny_and_thin_volumes(tiny):
    for shape in [(1, 2), (1, 7), (3, 2), (9, 300)]:
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 5
        if np.ptp(image) == 0:
            image[0, 0] = 1
        assert _predict(image, (8, 8), tiny).shape == shape
    volume = np.random.default_rng(0).random((2, 5, 6)).astype(np.float32)
    assert _predict(volume, (8, 8, 8), tiny).shape == volume.shape


def test_training_mode_is_restored(tiny):
    model, config = tiny
    model.train()
    try:
        _predict(_image((30, 30)), (8, 8), tiny)
        assert model.training
    finally:
        model.eval()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(tiny):
    model, config = tiny
    volume = np.stack([_image((300, 280), seed=s) for s in range(3)])
    cpu = predict_boundaries(volume, (40, 8, 8), (model, config), device="cpu", tile_size=128)
    gpu = predict_boundaries(volume, (40, 8, 8), (model, config), device="cuda", tile_size=128)
    model.to("cpu")
    assert np.abs(cpu - gpu).mean() < 0.01 and np.abs(cpu - gpu).max() < 0.1


def test_run_prediction_keeps_the_leading_channels(tiny):
    from napari_connectome.models.inference import check_inputs, run_prediction

    volume, ndim, sizes, orientations = check_inputs(_image((2, 70, 90)), (8, 8, 8), "xy", 4)
    assert ndim == 3 and orientations == ("xy",) and sizes == (8.0, 8.0, 8.0)
    kwargs = dict(batch_size=4, tile_size=128, progress=None, should_stop=None, purpose="x")
    one = run_prediction(
        volume, ndim, sizes, orientations, tiny, device=torch.device("cpu"), channels=1, **kwargs
    )
    assert one.shape == (1, 2, 70, 90)
    plain = _predict(volume, (8, 8, 8), tiny, planes="xy", tile_size=128, batch_size=4, augment=1)
    np.testing.assert_array_equal(one[0], plain)

    class ThreeWay(torch.nn.Module):
        def forward(self, x):
            return torch.cat([10 * x - 5, 5 - 10 * x, 0 * x + 3], dim=1)

    model = (ThreeWay(), {**tiny[1], "out_channels": 3})
    two = run_prediction(
        volume, ndim, sizes, ("xy", "xz"), model, device=torch.device("cpu"), channels=2, **kwargs
    )
    assert two.shape == (2, 2, 70, 90) and two[0].std() > 0.05
    np.testing.assert_allclose(two[0] + two[1], 1.0, atol=1e-5)  # sigmoid(a) + sigmoid(-a)
    image, ndim, sizes, orientations = check_inputs(_image((30, 40)), (8, 8), "auto", 1)
    assert ndim == 2 and sizes == (1.0, 8.0, 8.0) and orientations == ("xy",)
    with pytest.raises(ValueError, match="constant.*nothing to see"):
        run_prediction(
            np.ones((1, 30, 30)),
            3,
            (8, 8, 8),
            ("xy",),
            tiny,
            device=torch.device("cpu"),
            channels=1,
            batch_size=1,
            tile_size=128,
            progress=None,
            should_stop=None,
            purpose="nothing to see",
        )


def test_symmetries():
    assert symmetries(1) == [(False, False, False)]
    assert symmetries(2) == [(False, False, False), (False, False, True)]
    four, eight = symmetries(4), symmetries(8)
    assert len(set(four)) == 4 and not any(t for t, _, _ in four)
    assert len(set(eight)) == 8 and set(four) < set(eight)
    for bad in (0, 3, 16, True, 4.0, "4"):
        with pytest.raises(ValueError, match="augment must be one of"):
            symmetries(bad)


def test_augmentation_averages_the_mirrored_views(tiny):
    image = _image((96, 80), seed=3)
    big = {"tile_size": 256}  # one tile: each view sees exactly the mirrored image
    plain = _predict(image, (8, 8), tiny, augment=1, **big)
    views = [
        plain,
        _predict(image[:, ::-1], (8, 8), tiny, augment=1, **big)[:, ::-1],
        _predict(image[::-1], (8, 8), tiny, augment=1, **big)[::-1],
        _predict(image[::-1, ::-1], (8, 8), tiny, augment=1, **big)[::-1, ::-1],
    ]
    four = _predict(image, (8, 8), tiny, augment=4, **big)
    np.testing.assert_allclose(four, np.mean(views, axis=0), atol=1e-5)
    np.testing.assert_allclose(
        _predict(image, (8, 8), tiny, augment=2, **big), np.mean(views[:2], axis=0), atol=1e-5
    )
    assert np.abs(four - plain).max() > 1e-3  # the views really differ
    # the default is the four mirrors, and it is mirror-equivariant (the plain net is not)
    np.testing.assert_array_equal(_predict(image, (8, 8), tiny, **big), four)
    flipped = _predict(image[::-1], (8, 8), tiny, augment=4, **big)[::-1]
    np.testing.assert_allclose(flipped, four, atol=1e-5)
    assert np.abs(views[2] - plain).max() > 1e-3


def test_eight_views_are_rotation_equivariant(tiny):
    volume = np.stack([_image((96, 96), seed=s) for s in (4, 5)])
    kw = {"tile_size": 256, "planes": "xy"}  # one tile: the views see the same context
    eight = _predict(volume, (40, 8, 8), tiny, augment=8, **kw)
    turned = _predict(np.rot90(volume, 1, axes=(1, 2)), (40, 8, 8), tiny, augment=8, **kw)
    np.testing.assert_allclose(np.rot90(turned, -1, axes=(1, 2)), eight, atol=1e-5)
    plain = _predict(volume, (40, 8, 8), tiny, augment=1, **kw)
    turned = _predict(np.rot90(volume, 1, axes=(1, 2)), (40, 8, 8), tiny, augment=1, **kw)
    assert np.abs(np.rot90(turned, -1, axes=(1, 2)) - plain).max() > 1e-3  # not by itself
    assert eight.shape == volume.shape and eight.std() > 0.02
    with pytest.raises(ValueError, match="augment"):
        _predict(volume, (40, 8, 8), tiny, augment=3)
