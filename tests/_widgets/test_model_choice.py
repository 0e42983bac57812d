import pytest

from napari_connectome._widgets import _model_choice
from napari_connectome._widgets._model_choice import BUNDLED, MODEL_FILE, ModelChoice


def test_file_picker_shows_only_for_a_model_file(qtbot):
    choice = ModelChoice()
    assert not choice.model_file.visible
    choice.model.value = MODEL_FILE
    assert choice.model_file.visible
    choice.model.value = BUNDLED
    assert not choice.model_file.visible


def test_cuda_is_refused_where_there_is_none(qtbot, monkeypatch):
    monkeypatch.setattr(_model_choice, "cuda_available", lambda: False)
    choice = ModelChoice()
    assert choice.chosen_device() == "auto"
    choice.device.value = "cuda"
    with pytest.raises(ValueError, match="CUDA was asked for"):
        choice.chosen_device()


def test_chosen_model(qtbot, tmp_path):
    choice = ModelChoice()
    weights = tmp_path / "w.safetensors"
    with pytest.raises(ValueError, match="not installed"):
        choice.chosen_model(lambda: weights, "not installed", "model")
    weights.write_bytes(b"x")
    assert choice.chosen_model(lambda: weights, "not installed", "model") == "bundled"
    choice.model.value = MODEL_FILE
    with pytest.raises(ValueError, match="pick a synapse model file"):
        choice.chosen_model(lambda: weights, "not installed", "synapse model")
    choice.model_file.value = weights
    assert choice.chosen_model(lambda: weights, "not installed", "model") == str(weights)
