"""Save and load boundary models without ever unpickling untrusted code.

Formats read by :func:`load_model`:

- **safetensors** (what :func:`save_model` writes): tensors plus the model
  configuration as JSON in the metadata key ``"napari_connectome_config"`` (or in
  a sidecar ``<stem>.json``);
- **TorchScript** archives (``torch.jit.save``), read with ``torch.jit.load``,
  which does not unpickle arbitrary Python objects; the configuration comes from
  the archive's extra file ``napari_connectome_config.json`` or a sidecar JSON;
- **PyTorch state dicts** (``.pt`` / ``.pth``), read only with
  ``torch.load(..., weights_only=True)``; a file that needs anything but tensors
  and plain containers is refused.
"""

from __future__ import annotations

import json
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .unet import build_model, model_context, validate_config

__all__ = [
    "CONFIG_KEY",
    "WEIGHTS_DIR",
    "ModelFileError",
    "bundled_model_path",
    "installed_model",
    "load_bundled_model",
    "load_model",
    "resolve_device",
    "save_model",
    "save_torchscript",
]

#: Metadata key (safetensors) and extra-file stem (TorchScript) of the configuration.
CONFIG_KEY = "napari_connectome_config"
_EXTRA_FILE = CONFIG_KEY + ".json"
#: Folder of the weights shipped with the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class ModelFileError(ValueError):
    """A model file cannot be used: wrong format, refused content, bad configuration."""


def bundled_model_path() -> Path:
    """Path of the boundary model shipped with the package.

    Returns
    -------
    pathlib.Path
        ``napari_connectome/models/weights/boundary_unet.safetensors`` (it may not exist).
    """
    return WEIGHTS_DIR / "boundary_unet.safetensors"


def installed_model(path: Path, what: str, command: str) -> Path:
    """Check that a model shipped with the package is installed.

    Parameters
    ----------
    path : pathlib.Path
        Where the bundled weights should be.
    what : str
        Which model (``"boundary"``, ``"synapse"``), for the error.
    command : str
        The command that trains it, for the error.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ModelFileError
        If the file is not there, saying how to train one.
    """
    if not path.is_file():
        raise ModelFileError(
            f"the bundled {what} model is not installed (expected {path}); train one with "
            f"'{command}' or pass a weights file"
        )
    return path


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Returns
    -------
    torch.device
        The device to use.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available here")
    return device


def _complete_config(config: dict[str, Any]) -> dict[str, Any]:
    config = validate_config(config)
    config.setdefault("context_px", model_context(config["depth"]))
    return config


def save_model(
    model: nn.Module, config: dict[str, Any], path: str | Path, *, sidecar: bool = False
) -> Path:
    """Write a model's weights and configuration to a safetensors file.

    Parameters
    ----------
    model : torch.nn.Module
        The network (its ``state_dict`` is saved, on the CPU).
    config : dict
        Its configuration (JSON-serialisable), stored in the file's metadata.
    path : str or pathlib.Path
        Output file; ``.safetensors`` is the expected suffix.
    sidecar : bool
        Also write the configuration to ``<stem>.json`` beside the file.

    Returns
    -------
    pathlib.Path
        The written path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    config = _complete_config(config)
    text = json.dumps(config, sort_keys=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # one metadata key only: safetensors writes metadata in hash order, so a second key
    # would make the bytes of identical models differ between runs
    save_file(tensors, str(path), metadata={CONFIG_KEY: text})
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return path


def save_torchscript(model: nn.Module, config: dict[str, Any], path: str | Path) -> Path:
    """Write a model as a TorchScript archive with its configuration inside.

    Parameters
    ----------
    model : torch.nn.Module
        The network; it is scripted with ``torch.jit.script`` (on the CPU, in eval mode).
    config : dict
        Its configuration, stored as the extra file ``napari_connectome_config.json``.
    path : str or pathlib.Path
        Output file (``.pt`` is conventional).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    text = json.dumps(_complete_config(config), sort_keys=True)
    with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript, still supported
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model.to("cpu").eval())
        torch.jit.save(scripted, str(path), _extra_files={_EXTRA_FILE: text})
    return path


def load_bundled_model(device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load the boundary model shipped with the package.

    Parameters
    ----------
    device : str or torch.device
        Where to put the model (``"auto"`` allowed).

    Returns
    -------
    tuple of (torch.nn.Module, dict)
        The model in evaluation mode and its configuration.

    Raises
    ------
    ModelFileError
        If the bundled weights are not installed.
    """
    path = installed_model(bundled_model_path(), "boundary", "napari-connectome train")
    return load_model(path, device=device)


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a boundary model from safetensors, TorchScript or a state-dict file.

    Parameters
    ----------
    path : str or pathlib.Path
        The weights file, or ``"bundled"`` for the model shipped with the package.
    device : str or torch.device
        Where to put the model (``"auto"`` allowed).

    Returns
    -------
    tuple of (torch.nn.Module, dict)
        The model in evaluation mode and its configuration.

    Raises
    ------
    ModelFileError
        If the file is missing, of an unknown format, refused (pickled code), or
        does not match its configuration.
    """
    if str(path) == "bundled":
        return load_bundled_model(device)
    path = Path(path)
    device = resolve_device(device)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    kind = _sniff(path)
    if kind == "unknown" and path.suffix.lower() in (".pt", ".pth", ".ckpt", ".pkl"):
        kind = "pickle"
    if kind == "safetensors":
        model, config = _load_safetensors(path)
    elif kind == "torchscript":
        model, config = _load_torchscript(path, device)
    elif kind == "pickle":
        model, config = _load_state_dict_file(path)
    else:
        raise ModelFileError(
            f"{path.name} is not a model file: it is neither safetensors, a TorchScript "
            "archive nor a PyTorch state dict"
        )
    return model.to(device).eval(), config


def _sniff(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(16)
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return "unknown"
        if any("/code/" in name for name in names):
            return "torchscript"
        if any(name.endswith("data.pkl") for name in names):
            return "pickle"
        return "unknown"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):
        return "pickle"
    return "unknown"


def _sidecar_config(path: Path) -> dict[str, Any] | None:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        raise ModelFileError(
            f"the sidecar configuration {sidecar.name} is not valid JSON: {err}"
        ) from None


def _checked_config(config: Any, path: Path) -> dict[str, Any]:
    if config is None:
        raise ModelFileError(
            f"{path.name} has no model configuration: neither in the file's metadata "
            f"({CONFIG_KEY!r}) nor in a sidecar {path.with_suffix('.json').name}"
        )
    try:
        return _complete_config(config)
    except ValueError as err:
        raise ModelFileError(f"{path.name}: invalid model configuration: {err}") from None


def _load_safetensors(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ModelFileError(f"{path.name} is not a readable safetensors file: {err}") from None
    config = None
    if CONFIG_KEY in metadata:
        try:
            config = json.loads(metadata[CONFIG_KEY])
        except ValueError as err:
            raise ModelFileError(
                f"{path.name}: the stored configuration is not JSON: {err}"
            ) from None
    if config is None:
        config = _sidecar_config(path)
    config = _checked_config(config, path)
    return _build_with(tensors, config, path), config


def _build_with(state: dict[str, torch.Tensor], config: dict[str, Any], path: Path) -> nn.Module:
    model = build_model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:3])}")
    if problems:
        raise ModelFileError(
            f"{path.name} does not match its configuration (base_channels="
            f"{config['base_channels']}, depth={config['depth']}, norm={config['norm']}): "
            + ", ".join(problems)
        )
    model.load_state_dict(state)
    return model


def _load_torchscript(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    extra = {_EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as err:
        raise ModelFileError(f"{path.name} is not a loadable TorchScript archive: {err}") from None
    config = None
    if extra[_EXTRA_FILE]:
        try:
            config = json.loads(extra[_EXTRA_FILE])
        except ValueError as err:
            raise ModelFileError(
                f"{path.name}: the stored configuration is not JSON: {err}"
            ) from None
    if config is None:
        config = _sidecar_config(path)
    return model, _checked_config(config, path)


def _load_state_dict_file(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ModelFileError(
            f"refused to load {path.name}: torch.load(weights_only=True) rejected it "
            f"({type(err).__name__}: {reason}). A .pt/.pth file must be a plain state dict; "
            "pickled Python objects are never unpickled, since that could run arbitrary code. "
            "Use safetensors or TorchScript instead"
        ) from None
    config = None
    if isinstance(obj, dict) and "state_dict" in obj:
        config = obj.get("config")
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFileError(f"{path.name} does not hold a state dict (a dict of tensors)")
    if config is None:
        config = _sidecar_config(path)
    config = _checked_config(config, path)
    return _build_with(obj, config, path), config
