import json

import numpy as np
import pytest

from napari_connectome.models.synapse_inference import SYNAPSE_OUTPUT, load_synapse_model
from napari_connectome.models.synapse_training import (
    SynapseTrainingConfig,
    main,
    train_synapses,
    validate_synapse_model,
)
from napari_connectome.models.training import main as training_main
from napari_connectome.models.training import record_path


def fake_data(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (30, 48, 48), dtype=np.uint8)
    syn = np.zeros(raw.shape, np.uint8)
    syn[:, 10:20, 10:20] = 1
    raw[syn > 0] = 0
    np.savez(tmp_path / "isbi2012_cardona_3d.npz", raw=raw, synapses=syn)
    return tmp_path


def config(tmp_path, name="w.safetensors", **kw):
    base = dict(
        output=str(tmp_path / name),
        data_dir=str(fake_data(tmp_path)),
        phantoms=1,
        phantom_shape=(6, 64, 64),
        steps=2,
        batch_size=2,
        patch_size=64,
        init_weights=None,
        validate=False,
        num_threads=1,
    )
    base.update(kw)
    return SynapseTrainingConfig(**base)


def test_training_writes_weights_and_record_reproducibly(tmp_path):
    record = train_synapses(config(tmp_path))
    model, cfg = load_synapse_model(tmp_path / "w.safetensors")
    assert cfg["out_channels"] == 2 and cfg["output"] == SYNAPSE_OUTPUT  # no post weight
    saved = json.loads(record_path(tmp_path / "w.safetensors").read_text())
    assert saved["steps"] == 2 and len(saved["loss_curve"]) == 2
    assert saved["data"][0]["held_out_sections"] == list(range(20, 30))
    assert saved["data"][0]["target"] == "synapses"
    assert saved["phantom_planes"]  # the phantom took part
    again = train_synapses(config(tmp_path, "w2.safetensors"))
    assert again["weights_sha256"] == record["weights_sha256"]


def test_stop_after_steps_ends_early_and_is_recorded(tmp_path):
    record = train_synapses(config(tmp_path, steps=3, stop_after_steps=1))
    assert record["steps"] == 1 and record["stopped_early"] is True
    assert record["training_config"]["stop_after_steps"] == 1


def test_the_time_budget_stops_training_and_is_recorded(tmp_path):
    record = train_synapses(config(tmp_path, steps=3, max_minutes=1e-9))
    assert record["steps"] == 0 and record["stopped_early"] is True
    assert record["first_loss"] is None and record["loss_curve"] == []
    saved = json.loads(record_path(tmp_path / "w.safetensors").read_text())
    assert saved["stopped_early"] is True and saved["training_config"]["max_minutes"] == 1e-9
    full = train_synapses(config(tmp_path, "w2.safetensors", steps=1))
    assert full["steps"] == 1 and full["stopped_early"] is False


def test_starts_from_the_boundary_model(tmp_path):
    from napari_connectome.models.weights import bundled_model_path, load_model

    if not bundled_model_path().is_file():
        pytest.skip("no bundled boundary model")
    cfg = config(tmp_path, steps=0, init_weights="bundled", post_weight=1.0)
    train_synapses(cfg)
    model, _ = load_synapse_model(cfg.output)
    boundary, _ = load_model("bundled")
    a, b = model.state_dict(), boundary.state_dict()
    np.testing.assert_array_equal(a["encoders.0.0.weight"], b["encoders.0.0.weight"])
    np.testing.assert_array_equal(a["head.weight"][1], b["head.weight"][0])
    np.testing.assert_array_equal(a["head.weight"][2], b["head.weight"][0])


def test_a_two_channel_synapse_model_grows_a_postsynaptic_head(tmp_path):
    import torch

    from napari_connectome.models.unet import build_model, default_config
    from napari_connectome.models.weights import save_model

    old_config = default_config(out_channels=2, output=SYNAPSE_OUTPUT)
    torch.manual_seed(0)
    old = save_model(build_model(old_config), old_config, tmp_path / "two.safetensors")
    cfg = config(tmp_path, steps=0, init_weights=str(old), post_weight=1.0)
    train_synapses(cfg)
    grown, grown_config = load_synapse_model(cfg.output)
    source, _ = load_synapse_model(old)
    a, b = grown.state_dict(), source.state_dict()
    assert grown_config["out_channels"] == 3
    for key in ("head.weight", "head.bias"):
        np.testing.assert_array_equal(a[key][:2], b[key])  # kept
        np.testing.assert_array_equal(a[key][2], b[key][1])  # starts as the pre zone
    # going on from it without a postsynaptic weight would drop that channel: refused
    with pytest.raises(ValueError, match="--post-weight"):
        train_synapses(config(tmp_path, "back.safetensors", steps=0, init_weights=cfg.output))
    with pytest.raises(ValueError, match=">= 0"):
        train_synapses(config(tmp_path, "neg.safetensors", steps=0, post_weight=-1.0))


def test_validation_scores_and_command_line(tmp_path, capsys, monkeypatch):
    cfg = config(tmp_path)
    data = cfg.data_dir
    args = [
        "--target",
        "synapses",
        "--output",
        cfg.output,
        "--data-dir",
        data,
        "--phantoms",
        "1",
        "--phantom-shape",
        "6",
        "64",
        "64",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--patch-size",
        "64",
        "--init-weights",
        "none",
        "--pre-weight",
        "0.25",
        "--post-weight",
        "0.75",
        "--stop-after-steps",
        "1",
        "--threads",
        "1",
        "--no-validate",
    ]
    assert training_main(args, prog="napari-connectome train") == 0
    trained = json.loads(record_path(cfg.output).read_text())["training_config"]
    assert trained["pre_weight"] == 0.25 and trained["post_weight"] == 0.75
    assert trained["stop_after_steps"] == 1
    assert load_synapse_model(cfg.output)[1]["out_channels"] == 3
    from napari_connectome.core import synapses

    calls = []
    assign = synapses.assign_partners

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return assign(*args, **kwargs)

    monkeypatch.setattr(synapses, "assign_partners", recording)
    scores = validate_synapse_model(cfg.output, data, phantom_shape=(6, 64, 64))
    # partners are scored as the product reads them: contacts weigh the synapse map
    assert calls and all(c.get("synapse") is not None for c in calls)
    isbi = scores["isbi2012_cardona_3d"]
    assert isbi["sections"] == list(range(20, 30))
    assert set(isbi["detection"]) >= {"precision", "recall", "f1"}
    phantoms = [k for k in scores if k.startswith("phantom_validation")]
    assert len(phantoms) == 2
    assert (
        main(
            [
                "--output",
                cfg.output,
                "--data-dir",
                data,
                "--phantom-shape",
                "6",
                "64",
                "64",
                "--validate-only",
            ]
        )
        == 0
    )
    saved = json.loads(record_path(cfg.output).read_text())
    assert "isbi2012_cardona_3d" in saved["validation"]


@pytest.mark.parametrize("post_weight", [0.0, 1.0])
def test_the_partner_channels_learn_only_where_they_have_truth(post_weight):
    import torch

    from napari_connectome.models.synapse_training import _loss

    cfg = SynapseTrainingConfig(output="unused", post_weight=post_weight)
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    targets = torch.zeros(2, 3, 8, 8)
    targets[:, :, 2:5, 2:5] = 1.0
    masks = torch.ones(2, 1, 8, 8)
    partner_truth = torch.tensor([1.0, 0.0]).reshape(2, 1, 1, 1)  # a phantom, a real plane
    _loss(logits, targets, masks, partner_truth, cfg).backward()
    grad = logits.grad.abs().sum(dim=(2, 3))
    assert grad[0, 0] > 0 and grad[1, 0] > 0  # the synapse channel everywhere
    assert grad[0, 1] > 0 and grad[1, 1] == 0  # presynaptic: phantom planes only
    assert (grad[0, 2] > 0) == (post_weight > 0) and grad[1, 2] == 0
