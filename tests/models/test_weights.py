import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from napari_connectome.models.unet import build_model, default_config
from napari_connectome.models.weights import (
    CONFIG_KEY,
    ModelFileError,
    bundled_model_path,
    load_bundled_model,
    load_model,
    resolve_device,
    save_model,
    save_torchscript,
)

TINY = {"base_channels": 4, "depth": 2}


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    config = default_config(**TINY)
    model = build_model(config)
    with torch.no_grad():  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model, config


def _same_outputs(a, b):
    x = torch.rand(2, 1, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_safetensors_round_trip(tiny, tmp_path):
    model, config = tiny
    path = save_model(model, config, tmp_path / "m.safetensors", sidecar=True)
    assert json.loads(path.with_suffix(".json").read_text())["base_channels"] == 4
    loaded, loaded_config = load_model(path)
    assert loaded_config["base_channels"] == 4 and loaded_config["context_px"] == model.context
    assert not loaded.training
    _same_outputs(model, loaded)


def test_safetensors_config_from_sidecar(tiny, tmp_path):
    model, config = tiny
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(ModelFileError, match="no model configuration"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps(config))
    _same_outputs(model, load_model(path)[0])


def test_torchscript_load(tiny, tmp_path):
    model, config = tiny
    path = save_torchscript(model, config, tmp_path / "m.pt")
    loaded, loaded_config = load_model(path)
    assert isinstance(loaded, torch.jit.ScriptModule)
    assert loaded_config["depth"] == 2
    _same_outputs(model, loaded)


def test_state_dict_pt_with_sidecar_or_embedded_config(tiny, tmp_path):
    model, config = tiny
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(ModelFileError, match="no model configuration"):
        load_model(path)
    path.with_suffix(".json").write_text(json.dumps(config))
    _same_outputs(model, load_model(path)[0])
    both = tmp_path / "both.pt"
    torch.save({"state_dict": model.state_dict(), "config": config}, both)
    _same_outputs(model, load_model(both)[0])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch.save", "state_dict"])
def test_malicious_pickle_is_refused(tmp_path, writer, tiny):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(_Evil(marker)))
    elif writer == "torch.save":
        torch.save(_Evil(marker), path)
    else:  # a real state dict with a booby-trapped entry, plus a valid sidecar config
        state = dict(tiny[0].state_dict())
        state["extra"] = _Evil(marker)
        torch.save(state, path)
        path.with_suffix(".json").write_text(json.dumps(tiny[1]))
    with pytest.raises(ModelFileError, match="refused") as info:
        load_model(path)
    assert "arbitrary code" in str(info.value)
    assert not marker.exists()
    # the payload is real: unpickling it would have written the marker
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.exists()


def test_wrong_files(tmp_path, tiny):
    model, config = tiny
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(text)
    text_pt = tmp_path / "notes.pt"
    text_pt.write_text("hello\n")
    with pytest.raises(ModelFileError, match="notes.pt"):
        load_model(text_pt)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.safetensors")

    meta = {CONFIG_KEY: json.dumps(config)}
    wrong_keys = tmp_path / "keys.safetensors"
    save_file({"foo.weight": torch.zeros(3)}, str(wrong_keys), metadata=meta)
    with pytest.raises(ModelFileError, match="missing tensors.*unexpected tensors"):
        load_model(wrong_keys)

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["head.weight"] = torch.zeros(1, 5, 1, 1)
    wrong_shape = tmp_path / "shape.safetensors"
    save_file(state, str(wrong_shape), metadata=meta)
    with pytest.raises(ModelFileError, match=r"wrong shapes: head.weight \(1, 5, 1, 1\)"):
        load_model(wrong_shape)

    bigger = tmp_path / "bigger.safetensors"
    save_model(model, config, bigger)
    other = tmp_path / "other.safetensors"
    other.write_bytes(bigger.read_bytes())
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(other),
        metadata={CONFIG_KEY: json.dumps({**config, "base_channels": 8})},
    )
    with pytest.raises(ModelFileError, match="does not match its configuration"):
        load_model(other)

    bad_config = tmp_path / "arch.safetensors"
    save_file(state, str(bad_config), metadata={CONFIG_KEY: json.dumps({"architecture": "x"})})
    with pytest.raises(ModelFileError, match="invalid model configuration"):
        load_model(bad_config)

    not_json = tmp_path / "nj.safetensors"
    save_file(state, str(not_json), metadata={CONFIG_KEY: "{oops"})
    with pytest.raises(ModelFileError, match="not JSON"):
        load_model(not_json)


def test_bundled_model():
    path = bundled_model_path()
    assert path.name == "boundary_unet.safetensors" and path.parent.name == "weights"
    if path.is_file():
        model, config = load_bundled_model()
        assert config["architecture"] == "boundary_unet2d"
        assert load_model("bundled")[1] == config
    else:
        with pytest.raises(ModelFileError, match="not installed"):
            load_model("bundled")


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_installed_model_says_how_to_train_a_missing_one(tmp_path):
    from napari_connectome.models.weights import WEIGHTS_DIR, installed_model

    assert bundled_model_path().parent == WEIGHTS_DIR
    present = tmp_path / "m.safetensors"
    present.write_bytes(b"x")
    assert installed_model(present, "boundary", "train it") == present
    with pytest.raises(ModelFileError, match=r"bundled thing model is not installed.*'make it'"):
        installed_model(tmp_path / "absent", "thing", "make it")
