import numpy as np
import pytest
import torch
from torch import nn

from napari_connectome.models.synapse_inference import (
    SYNAPSE_OUTPUT,
    load_synapse_model,
    predict_synapse_maps,
)
from napari_connectome.models.unet import build_model, default_config
from napari_connectome.models.weights import ModelFileError, save_model

CONFIG = default_config(out_channels=2, output=SYNAPSE_OUTPUT, base_channels=4, depth=2)
CONFIG3 = {**CONFIG, "out_channels": 3}


class DarkAndBright(nn.Module):
    """Channel 0 fires on dark pixels, channel 1 on bright ones."""

    def forward(self, x):
        return torch.cat([40 * (0.2 - x), 40 * (x - 0.8)], dim=1)


class DarkBrightAndGrey(nn.Module):
    """As :class:`DarkAndBright`, and channel 2 fires on mid grey."""

    def forward(self, x):
        return torch.cat([40 * (0.2 - x), 40 * (x - 0.8), 40 * (0.1 - (x - 0.5).abs())], dim=1)


def test_all_three_channels_are_predicted_and_tiled_seamlessly():
    rng = np.random.default_rng(0)
    vol = rng.integers(126, 130, (2, 300, 280)).astype(np.uint8)
    vol[:, 30:70, 30:70] = 0  # over 1 % of the plane each: the percentiles reach them
    vol[:, 190:230, 90:140] = 255
    syn, pre, post = predict_synapse_maps(
        vol, (40.0, 8.0, 8.0), (DarkBrightAndGrey(), CONFIG3), device="cpu", tile_size=128
    )
    assert syn.shape == pre.shape == post.shape == vol.shape and syn.dtype == np.float32
    assert syn[:, 35:65, 35:65].min() > 0.9 and syn[:, 195:225, 95:135].max() < 0.1
    assert pre[:, 195:225, 95:135].min() > 0.9 and pre[:, 35:65, 35:65].max() < 0.1
    assert syn[:, 150:170, 200:260].max() < 0.1  # mid grey: neither of the first two...
    assert post[:, 150:170, 200:260].min() > 0.9  # ...but the third
    assert post[:, 35:65, 35:65].max() < 0.1


def test_test_time_augmentation_averages_mirrored_views():
    class LeftEdge(nn.Module):  # fires on pixels whose left neighbour is darker
        def forward(self, x):
            edge = x - torch.roll(x, 1, dims=-1)
            return torch.cat([40 * edge, 40 * edge], dim=1)

    vol = np.zeros((1, 64, 64), np.uint8)
    vol[:, :, 32:] = 255  # one vertical edge at x = 32
    plain = predict_synapse_maps(
        vol, (40.0, 8.0, 8.0), (LeftEdge(), CONFIG), device="cpu", augment=1
    )
    mirrored = predict_synapse_maps(
        vol, (40.0, 8.0, 8.0), (LeftEdge(), CONFIG), device="cpu", augment=2
    )
    assert plain.synapse[0, 20:44, 32].min() > 0.99  # the dark-to-bright edge
    # the mirrored view sees no rising edge there (logit 0, probability 0.5): mean 0.75
    np.testing.assert_allclose(mirrored.synapse[0, 20:44, 32], 0.75, atol=0.01)


def test_a_two_channel_model_has_no_postsynaptic_map():
    vol = np.random.default_rng(2).integers(0, 255, (2, 64, 64)).astype(np.uint8)
    maps = predict_synapse_maps(vol, (40.0, 8.0, 8.0), (DarkAndBright(), CONFIG), device="cpu")
    assert maps.postsynaptic is None and maps.synapse.shape == vol.shape


def test_2d_and_progress_and_cancel():
    from napari_connectome.models.inference import PredictionCancelled

    img = np.random.default_rng(1).integers(0, 255, (90, 70)).astype(np.uint8)
    calls = []
    syn, pre, _ = predict_synapse_maps(
        img,
        (8.0, 8.0),
        (DarkAndBright(), CONFIG),
        device="cpu",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert syn.shape == img.shape and calls[-1][0] == calls[-1][1]
    with pytest.raises(PredictionCancelled):
        predict_synapse_maps(
            img, (8.0, 8.0), (DarkAndBright(), CONFIG), device="cpu", should_stop=lambda: True
        )
    with pytest.raises(ValueError, match="only the 'xy' plane"):
        predict_synapse_maps(img, (8.0, 8.0), (DarkAndBright(), CONFIG), planes="xz")


def test_a_one_channel_model_is_refused(tmp_path):
    path = save_model(
        build_model(default_config(base_channels=4, depth=2)),
        default_config(base_channels=4, depth=2),
        tmp_path / "boundary.safetensors",
    )
    with pytest.raises(ModelFileError, match="not a synapse model"):
        load_synapse_model(path)
    with pytest.raises(ValueError, match="2 or 3 output channels"):
        predict_synapse_maps(
            np.random.default_rng(0).random((2, 64, 64)),
            (40.0, 8.0, 8.0),
            (build_model(default_config(base_channels=4, depth=2)), None),
        )


@pytest.mark.parametrize("config", [CONFIG, CONFIG3], ids=["two channels", "three channels"])
def test_saved_synapse_model_round_trip(tmp_path, config):
    model = build_model(config)
    path = save_model(model, config, tmp_path / "syn.safetensors")
    loaded, loaded_config = load_synapse_model(path)
    assert loaded_config["out_channels"] == config["out_channels"]
    assert loaded_config["output"] == SYNAPSE_OUTPUT
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))


def test_missing_file(tmp_path, monkeypatch):
    from napari_connectome.models import synapse_inference

    with pytest.raises(ModelFileError, match="not found"):
        load_synapse_model("/nonexistent/syn.safetensors")
    monkeypatch.setattr(synapse_inference, "bundled_synapse_model_path", lambda: tmp_path / "no")
    with pytest.raises(ModelFileError, match="synapse model is not installed.*--target synapses"):
        load_synapse_model("bundled")
