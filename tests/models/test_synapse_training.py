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
    assert cfg["out_channels"] == 2 and cfg["output"] == SYNAPSE_OUTPUT
    saved = json.loads(record_path(tmp_path / "w.safetensors").read_text())
    assert saved["steps"] == 2 and len(saved["loss_curve"]) == 2
    assert saved["data"][0]["held_out_sections"] == list(range(20, 30))
    assert saved["data"][0]["target"] == "synapses"
    assert saved["phantom_planes"]  # the phantom took part
    again = train_synapses(config(tmp_path, "w2.safetensors"))
    assert again["weights_sha256"] == record["weights_sha256"]


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
    cfg = config(tmp_path, steps=0, init_weights="bundled")
    train_synapses(cfg)
    model, _ = load_synapse_model(cfg.output)
    boundary, _ = load_model("bundled")
    a, b = model.state_dict(), boundary.state_dict()
    np.testing.assert_array_equal(a["encoders.0.0.weight"], b["encoders.0.0.weight"])
    np.testing.assert_array_equal(a["head.weight"][1], b["head.weight"][0])


def test_validation_scores_and_command_line(tmp_path, capsys):
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
        "--threads",
        "1",
        "--no-validate",
    ]
    assert training_main(args, prog="napari-connectome train") == 0
    trained = json.loads(record_path(cfg.output).read_text())["training_config"]
    assert trained["pre_weight"] == 0.25
    assert load_synapse_model(cfg.output)[1]["out_channels"] == 2
    scores = validate_synapse_model(cfg.output, data, phantom_shape=(6, 64, 64))
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
