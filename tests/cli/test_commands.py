import json
from pathlib import Path

import numpy as np
import pytest

from napari_connectome.cli import main


@pytest.fixture
def volumes(tmp_path):
    truth = np.zeros((4, 20, 20), dtype=np.uint32)
    truth[:, :, :10] = 1
    truth[:, :, 10:] = 2
    seg = truth.copy()
    seg[:, :10, :] += 10  # split both objects in two halves: 1 bit of VOI split
    np.savez(tmp_path / "vol.npz", seg=seg, truth=truth)
    return tmp_path / "vol.npz"


def test_evaluate_json(volumes, capsys):
    assert main(["evaluate", f"{volumes}:seg", f"{volumes}:truth", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert {"voi_split", "voi_merge", "voi", "arand"} <= scores.keys()
    assert scores["voi_split"] == pytest.approx(1.0)
    assert scores["voi_merge"] == pytest.approx(0.0)


def test_evaluate_table(volumes, capsys):
    assert main(["evaluate", f"{volumes}:seg", f"{volumes}:truth"]) == 0
    out = capsys.readouterr().out
    assert "VOI split" in out and "adapted Rand" in out


def test_evaluate_missing_file_is_a_clear_error(tmp_path, capsys):
    status = main(["evaluate", str(tmp_path / "nope.zarr"), str(tmp_path / "nope.npz")])
    assert status == 2
    err = capsys.readouterr().err
    assert "nope.zarr" in err and "error" in err


def test_evaluate_shape_mismatch_is_a_clear_error(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones((4, 8, 8), np.uint32))
    np.save(tmp_path / "b.npy", np.ones((4, 8, 9), np.uint32))
    assert main(["evaluate", str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]) == 2
    assert "(4, 8, 9)" in capsys.readouterr().err


def test_phantom_command_writes_a_phantom(tmp_path, capsys):
    out = tmp_path / "p.npz"
    assert main(["phantom", str(out), "--shape", "6", "48", "48", "--seed", "3"]) == 0
    assert "neurons" in capsys.readouterr().out
    with np.load(out) as archive:
        assert archive["raw"].shape == (6, 48, 48)
    assert main(["phantom", str(out), "--shape", "6", "48", "48"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_phantom_command_rejects_bad_voxel_size(tmp_path, capsys):
    args = ["phantom", str(tmp_path / "p.npz"), "--voxel-size", "40", "0", "4"]
    assert main(args) == 2
    assert "voxel-size" in capsys.readouterr().err


def test_demo_headless_writes_a_screenshot_and_summary(tmp_path, capsys):
    from skimage.io import imread

    assert main(["demo", "--headless", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert imread(tmp_path / "napari_sample_truth.png")[..., :3].std() > 10
    screenshot = imread(tmp_path / "napari_window.png")
    assert screenshot.ndim == 3 and screenshot.shape[0] > 200
    assert screenshot[..., :3].std() > 10  # a real rendering, not a blank canvas
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["neurons"] > 10 and summary["synapses"] > 0
    assert "napari_window.png" in out
    from napari_connectome.models import bundled_model_path

    if bundled_model_path().is_file():  # the main job: the sample segmented and scored
        assert summary["scores_vs_truth"]["voi"] < 2.0
        assert "EM segmentation" in summary["layers"]
        assert (tmp_path / "sample_segmentation.zarr" / "segmentation").is_dir()


def test_evaluate_agrees_with_scikit_image_on_real_data(tmp_path, capsys):
    from scipy import ndimage
    from skimage.metrics import variation_of_information

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012_cardona_3d.npz"
    if not data.exists():
        pytest.skip(f"real data not found at {data}")
    with np.load(data) as archive:
        truth = archive["labels_cc"]
        membranes = archive["membranes"]
    # An imperfect segmentation: 3D components of the eroded non-membrane mask.
    interior = ndimage.binary_erosion(membranes == 0, iterations=2)
    seg, _ = ndimage.label(interior)
    np.save(tmp_path / "seg.npy", seg.astype(np.uint32))
    assert main(["evaluate", str(tmp_path / "seg.npy"), f"{data}:labels_cc", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # scikit-image returns (H(seg | truth), H(truth | seg)): the split part first.
    split, merge = variation_of_information(truth, seg, ignore_labels=[0])
    assert scores["voi_split"] == pytest.approx(split, abs=1e-6)
    assert scores["voi_merge"] == pytest.approx(merge, abs=1e-6)
    assert scores["voi_split"] > 0.1  # the eroded components really are imperfect
