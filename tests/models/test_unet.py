import numpy as np
import pytest
import torch

from napari_connectome.models.tiling import (
    axis_tiles,
    axis_window,
    normalize_plane,
    smallest_tile,
    tile_window,
)
from napari_connectome.models.unet import (
    BoundaryUNet,
    build_model,
    default_config,
    model_context,
    receptive_field,
    validate_config,
)


@pytest.mark.parametrize("shape", [(1, 1, 37, 51), (2, 1, 64, 64), (1, 1, 5, 3), (3, 1, 1, 9)])
def test_forward_keeps_any_shape(shape):
    model = BoundaryUNet(base_channels=4, depth=3)
    with torch.no_grad():
        out = model.eval()(torch.rand(shape))
    assert out.shape == shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_norms_train_with_batch_of_one(norm):
    model = BoundaryUNet(base_channels=4, depth=2, norm=norm).train()
    loss = model(torch.rand(1, 1, 32, 32)).mean()
    loss.backward()
    assert model.head.weight.grad is not None


def test_default_config_size_and_context():
    config = default_config()
    assert config["base_channels"] == 16 and config["depth"] == 4
    assert config["pixel_size_nm"] == 8.0
    model = build_model(config)
    megabytes = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    assert 0.5 < megabytes < 20
    assert model.context == config["context_px"] == model_context(4)
    assert model.context % model.factor == 0
    assert 32 <= model.context <= 64


def test_receptive_field_bounds_the_influence_of_a_pixel():
    torch.manual_seed(0)
    model = build_model(default_config(base_channels=4, depth=3, norm="none"))
    x = torch.rand(1, 1, 96, 96)
    y = x.clone()
    y[0, 0, 48, 48] += 1.0
    with torch.no_grad():
        diff = (model(x) - model(y)).abs()[0, 0]
    changed = torch.nonzero(diff > 0)
    radius = int((changed - 48).abs().max())
    assert 0 < radius <= receptive_field(3) // 2


def test_validate_config_rejects_bad_values():
    with pytest.raises(ValueError, match="architecture"):
        validate_config({"architecture": "resnet"})
    with pytest.raises(ValueError, match="depth"):
        validate_config({"depth": 0})
    with pytest.raises(ValueError, match="pixel_size_nm"):
        validate_config({"pixel_size_nm": -1})
    with pytest.raises(ValueError, match="norm"):
        validate_config({"norm": "layer"})


def test_normalize_plane_is_contrast_invariant():
    rng = np.random.default_rng(0)
    plane = rng.normal(100, 20, (64, 64))
    a = normalize_plane(plane)
    b = normalize_plane(plane * 0.3 + 50)
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not normalize_plane(np.full((8, 8), 7)).any()
    m = normalize_plane(plane, {"method": "meanstd"})
    assert 0.4 < m.mean() < 0.6
    # dark stays dark
    assert np.corrcoef(a.ravel(), plane.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("length", [1, 10, 100, 137, 500, 1001])
def test_tile_windows_sum_to_one(length):
    tiles = axis_tiles(length, 64, 10, 2)
    total = np.zeros(tiles.padded_length)
    for i, start in enumerate(tiles.starts):
        total[start : start + tiles.size] += axis_window(tiles, i)
    inside = total[tiles.pad_before : tiles.pad_before + length]
    np.testing.assert_allclose(inside, 1.0, atol=1e-6)
    assert tiles.pad_before + length + tiles.pad_after == tiles.padded_length
    assert all(s % 2 == 0 for s in tiles.starts) and tiles.size % 2 == 0


def test_tile_window_2d_and_smallest_tile():
    rows, cols = axis_tiles(300, 128, 48, 8), axis_tiles(90, 128, 48, 8)
    assert len(rows.starts) > 1 and len(cols.starts) == 1
    assert tile_window(rows, cols, 1, 0).shape == (rows.size, cols.size)
    assert smallest_tile(48, 8) == 2 * 48 + 24 + 8
    with pytest.raises(ValueError, match="too small"):
        axis_tiles(1000, 64, 48, 8)
