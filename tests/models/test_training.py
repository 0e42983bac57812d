import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from napari_connectome.models.augment import AugmentConfig, augment_patch, random_scale_crop
from napari_connectome.models.datasets import (
    DataSource,
    PatchSampler,
    default_sources,
    label_boundaries,
    make_training_samples,
    npz_shape,
)
from napari_connectome.models.training import (
    TrainingConfig,
    boundary_loss,
    boundary_scores,
    main,
    record_path,
    train,
)
from napari_connectome.models.weights import load_model

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TINY = {"base_channels": 4, "depth": 2}


def _fake_sources(tmp_path, held_target=1):
    """Two small volumes whose held-out sections are all boundary and the rest none."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (8, 40, 48), dtype=np.uint8)
    membranes = np.zeros(raw.shape, np.uint8)
    membranes[-3:] = held_target
    np.savez(tmp_path / "aniso.npz", raw=raw, membranes=membranes)
    labels = np.ones((12, 30, 30), np.uint32)  # one neuron, no boundary...
    labels[-4:] = 0  # ...except in the held-out sections
    np.savez(
        tmp_path / "iso.npz", raw=rng.integers(0, 255, labels.shape, dtype=np.uint8), labels=labels
    )
    return [
        DataSource(str(tmp_path / "aniso.npz"), (40.0, 8.0, 8.0), holdout_last=2, holdout=[5]),
        DataSource(
            str(tmp_path / "iso.npz"),
            (8.0, 8.0, 8.0),
            membranes=None,
            labels="labels",
            holdout_last=4,
        ),
    ]


def test_held_out_sections_are_never_sampled(tmp_path):
    sources = _fake_sources(tmp_path)
    assert sources[0].held_out(8) == [5, 6, 7]
    samples = make_training_samples(sources, pixel_size_nm=8.0)
    by_source = {s.source: s for s in samples}
    assert set(by_source) == {"aniso", "iso"}
    orientations = {(s.source, s.orientation) for s in samples}
    assert orientations == {("aniso", "xy"), ("iso", "xy"), ("iso", "xz"), ("iso", "yz")}
    for s in samples:
        held = {"aniso": {5, 6, 7}, "iso": {8, 9, 10, 11}}[s.source]
        assert not held & set(s.sections)
        assert s.target.max() == 0, (s.source, s.orientation, s.index)
    sampler = PatchSampler(samples, 32, seed=0)
    for _ in range(5):
        images, targets, masks = sampler.batch(4)
        assert images.shape == (4, 1, 32, 32) and targets.max() == 0


def test_make_samples_resamples_to_canonical(tmp_path):
    sources = _fake_sources(tmp_path, held_target=0)
    sources[0].voxel_size = (40.0, 4.0, 4.0)
    samples = make_training_samples(sources[:1], pixel_size_nm=8.0)
    assert {s.image.shape for s in samples} == {(20, 24)}
    assert all(
        s.image.dtype == np.float32 and 0 <= s.image.min() <= s.image.max() <= 1 for s in samples
    )


def test_label_boundaries():
    labels = np.array([[1, 1, 2], [1, 0, 2], [3, 3, 3]])
    b = label_boundaries(labels)
    assert b[1, 1] and b[0, 1] and b[0, 2] and b[2, 0] and not b[0, 0]


def test_augmentations_keep_shapes_and_ranges():
    rng = np.random.default_rng(0)
    image = rng.random((50, 70)).astype(np.float32)
    target = (rng.random((50, 70)) > 0.8).astype(np.float32)
    for _ in range(10):
        patch = random_scale_crop(image, target, 64, rng)
        assert all(a.shape == (64, 64) and a.dtype == np.float32 for a in patch)
        assert patch[2].min() == 0  # the plane is smaller than the patch: masked padding
        out = augment_patch(
            *patch, rng, AugmentConfig(deform_probability=1, artefact_probability=1)
        )
        assert all(a.shape == (64, 64) for a in out)
        assert 0 <= out[0].min() and out[0].max() <= 1 and 0 <= out[1].min() and out[1].max() <= 1
    big = rng.random((300, 300)).astype(np.float32)
    assert random_scale_crop(big, big, 64, rng)[2].min() == 1


def test_loss_and_scores():
    target = torch.zeros(1, 1, 16, 16)
    target[..., 8, :] = 1
    mask = torch.ones_like(target)
    good = boundary_loss((target * 2 - 1) * 8, target, mask, dice_weight=0.5)
    bad = boundary_loss(-(target * 2 - 1) * 8, target, mask, dice_weight=0.5)
    assert good < 0.05 < bad
    truth = np.zeros((50, 50), bool)
    truth[::5] = True
    perfect = boundary_scores(truth.astype(np.float32), truth)
    assert perfect["f1"] == pytest.approx(1) and perfect["roc_auc"] == pytest.approx(1)
    noise = boundary_scores(np.random.default_rng(0).random(truth.shape), truth)
    assert 0.4 < noise["roc_auc"] < 0.6


def _config(tmp_path, sources, **kw):
    values = dict(
        output=str(tmp_path / "out" / "model.safetensors"),
        sources=sources,
        phantoms=0,
        steps=4,
        batch_size=2,
        patch_size=32,
        model=TINY,
        seed=1,
        num_threads=2,
    )
    values.update(kw)
    return TrainingConfig(**values)


def test_train_writes_loadable_weights_and_record(tmp_path):
    sources = _fake_sources(tmp_path)
    for s in sources:  # thin boundaries every 6 pixels, held-out sections included
        with np.load(s.path) as a:
            arrays = dict(a)
        if "membranes" in arrays:
            arrays["membranes"] = np.zeros_like(arrays["membranes"])
            arrays["membranes"][:, ::6] = 1
        else:
            arrays["labels"] = np.ones_like(arrays["labels"])
            arrays["labels"][:, ::6] = 0
        np.savez(s.path, **arrays)
    steps = []
    config = _config(tmp_path, sources)
    record = train(config, progress=lambda s, n, loss: steps.append((s, n, loss)))
    assert [s for s, _, _ in steps] == [1, 2, 3, 4]
    weights = Path(config.output)
    model, model_config = load_model(weights)
    assert model_config["base_channels"] == 4
    saved = json.loads(record_path(weights).read_text())
    assert saved["steps"] == 4 and saved["hardware"]["device"] == "cpu"
    assert saved["data"][0]["held_out_sections"] == [5, 6, 7]
    assert set(saved["validation"]) == {"aniso", "iso"}
    assert 0 <= saved["validation"]["aniso"]["roc_auc"] <= 1
    assert np.isfinite(saved["final_loss"]) and saved["seconds"] > 0

    # same seed, same weights (CPU)
    again = train(
        _config(tmp_path, sources, output=str(tmp_path / "again.safetensors"), validate=False)
    )
    assert again["weights_sha256"] == record["weights_sha256"]

    # fine-tune from the weights just written
    tuned = train(
        _config(
            tmp_path,
            sources,
            output=str(tmp_path / "tuned.safetensors"),
            init_weights=str(weights),
            steps=2,
            validate=False,
        )
    )
    assert tuned["weights_sha256"] != record["weights_sha256"]
    with safe_open(str(tmp_path / "tuned.safetensors"), "pt") as f:
        assert "napari_connectome_config" in f.metadata()


def test_train_on_phantoms_with_cli(tmp_path, capsys):
    pytest.importorskip("napari_connectome.synthetic")
    out = tmp_path / "ph.safetensors"
    argv = ["--output", str(out), "--phantoms", "2", "--steps", "3", "--batch-size", "2"]
    argv += ["--patch-size", "32", "--base-channels", "4", "--depth", "2", "--threads", "2"]
    argv += ["--phantom-shape", "4", "64", "64"]
    assert main(argv) == 0
    assert "step 3/3" in capsys.readouterr().out
    record = json.loads(record_path(out).read_text())
    assert set(record["phantom_planes"]) == {"phantom0", "phantom1"}
    assert "phantom_validation" in record["validation"]


@pytest.mark.skipif(not (DATA / "isbi2012_cardona_3d.npz").is_file(), reason="no ../shared/data")
def test_real_data_hold_out_and_membrane_convention():
    sources = {s.label: s for s in default_sources(DATA)}
    assert sources["isbi2012_cardona_3d"].held_out(30) == list(range(20, 30))
    assert sources["drosophila_vnc_stack1"].held_out(20) == list(range(15, 20))
    assert npz_shape(DATA / "gala_fib_train.npz", "raw") == (50, 100, 200)
    # membranes are the value 1 and are darker than the rest
    with np.load(DATA / "isbi2012_cardona_3d.npz") as a:
        raw, membranes = a["raw"][:2], a["membranes"][:2]
    assert set(np.unique(membranes)) == {0, 1}
    assert raw[membranes == 1].mean() < raw[membranes == 0].mean() - 20
    samples = make_training_samples([sources["isbi2012_cardona_3d"], sources["gala_fib_train"]])
    isbi = [s for s in samples if s.source == "isbi2012_cardona_3d"]
    gala = [s for s in samples if s.source == "gala_fib_train"]
    assert len(isbi) == 20 and max(max(s.sections) for s in isbi) == 19
    assert isbi[0].image.shape == (256, 256)
    assert {s.orientation for s in gala} == {"xy", "xz", "yz"}
    assert max(max(s.sections) for s in gala) == 39
    assert len(gala) == 40 + 100 + 200


def test_sampler_balances_sources_and_phantoms():
    from napari_connectome.models.datasets import PlaneSample

    def plane(source, size, group=""):
        image = np.zeros((size, size), np.float32)
        return PlaneSample(image, image, source, "xy", 0, (0,), group)

    samples = [plane("big", 100), plane("big", 100), plane("small", 10)]
    samples += [plane(f"phantom{i}", 50, "phantoms") for i in range(4)]
    weights = PatchSampler(samples, 16).weights
    assert weights.sum() == pytest.approx(1)
    assert weights[:2].sum() == pytest.approx(1 / 3)
    assert weights[2] == pytest.approx(1 / 3)
    assert weights[3:].sum() == pytest.approx(1 / 3)
