r"""Train (or fine-tune) the boundary U-Net and record how it does on held-out sections.

Command line (the real training; a few minutes on a GPU, hours on a CPU)::

    napari-connectome train --data-dir ../shared/data \\
        --output src/napari_connectome/models/weights/boundary_unet.safetensors

writes the safetensors weights and ``<stem>.training.json`` (the training
record) next to them. ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import (
    DataSource,
    PatchSampler,
    default_sources,
    make_training_samples,
    npz_shape,
    phantom_volumes,
    source_targets,
)
from .inference import predict_boundaries
from .losses import boundary_loss, boundary_scores
from .unet import build_model, default_config
from .weights import load_model, resolve_device, save_model

__all__ = ["TrainingConfig", "boundary_loss", "boundary_scores", "main", "record_path", "train"]


@dataclass
class TrainingConfig:
    """Everything a training run depends on (stored in the training record).

    Attributes
    ----------
    output : str
        Weights file to write (``.safetensors``); the record goes to
        ``<stem>.training.json`` beside it.
    data_dir : str or None
        Folder of the real volumes; :func:`~.datasets.default_sources` picks the
        files found there, with their default held-out sections.
    sources : list of DataSource or None
        Volumes to use instead of the defaults of ``data_dir``.
    phantoms : int
        Number of phantom volumes added to the training data (0 = none).
    phantom_shape : tuple of int
        Shape of the anisotropic phantoms (isotropic ones are cubes of half the width).
    steps, batch_size, patch_size : int
        Optimisation steps, patches per step, patch edge (canonical pixels).
    learning_rate, weight_decay : float
        AdamW settings; the rate warms up linearly then follows a cosine to 5 %.
    warmup_steps : int
        Length of the warm-up.
    dice_weight : float
        Weight of the soft Dice term added to the class-balanced BCE.
    augment : bool
        Random augmentations (see :mod:`~.augment`).
    seed : int
        Seed of everything random (runs on the CPU are reproducible).
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
    init_weights : str or None
        Weights file to fine-tune from (its configuration wins over ``model``).
    model : dict
        Overrides of the default model configuration (``base_channels``, ``depth``,
        ``norm``, ``pixel_size_nm``).
    validate : bool
        Score the held-out sections after training.
    num_threads : int or None
        CPU threads of torch (None: leave as is).
    """

    output: str
    data_dir: str | None = None
    sources: list[DataSource] | None = None
    phantoms: int = 4
    phantom_shape: tuple[int, int, int] = (16, 384, 384)
    steps: int = 4000
    batch_size: int = 8
    patch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    dice_weight: float = 0.5
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    init_weights: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    validate: bool = True
    num_threads: int | None = None

    def data_sources(self) -> list[DataSource]:
        """Return the real volumes used: ``sources``, else the defaults of ``data_dir``."""
        if self.sources is not None:
            return [s if isinstance(s, DataSource) else DataSource(**s) for s in self.sources]
        return default_sources(self.data_dir) if self.data_dir else []


def record_path(weights: str | Path) -> Path:
    """Path of the training record written beside a weights file.

    Parameters
    ----------
    weights : str or pathlib.Path
        The weights file.

    Returns
    -------
    pathlib.Path
        ``<stem>.training.json`` in the same folder.
    """
    weights = Path(weights)
    return weights.with_name(weights.stem + ".training.json")


def _validation_sets(config: TrainingConfig, sources: list[DataSource]) -> list[dict]:
    sets = []
    for source in sources:
        with np.load(source.path) as archive:
            raw = np.asarray(archive[source.raw])
            truth = source_targets(source, archive)
        held = source.held_out(raw.shape[0])
        if held:
            sets.append(
                {
                    "name": source.label,
                    "raw": raw[held],
                    "truth": truth[held],
                    "voxel_size": tuple(source.voxel_size),
                    "sections": held,
                }
            )
    for ph in phantom_volumes(
        1 if config.phantoms else 0, config.phantom_shape, config.seed + 10_000
    ):
        sections = list(range(ph["raw"].shape[0]))
        sets.append(
            {**ph, "name": "phantom_validation", "truth": ph["target"], "sections": sections}
        )
    return sets


def _validate(model, model_config, sets, device) -> dict[str, dict]:
    scores = {}
    for item in sets:
        prob = predict_boundaries(
            item["raw"], item["voxel_size"], (model, model_config), device=device, planes="xy"
        )
        scores[item["name"]] = {
            "sections": [int(z) for z in item["sections"]],
            "voxel_size": list(item["voxel_size"]),
            **boundary_scores(prob, item["truth"]),
        }
    return scores


def _hardware(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"device": "cuda", "name": torch.cuda.get_device_name(device)}
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next(
                ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "device": "cpu",
        "name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def _initial_model(config: TrainingConfig):
    if config.init_weights:
        model, model_config = load_model(config.init_weights)
        changed = {k: v for k, v in config.model.items() if model_config.get(k) != v}
        if changed:
            warnings.warn(
                f"fine-tuning keeps the configuration of {config.init_weights}; "
                f"ignored: {changed}",
                stacklevel=3,
            )
        return model, model_config
    model_config = default_config(**config.model)
    return build_model(model_config), model_config


def _lr_factor(config: TrainingConfig) -> Callable[[int], float]:
    warm = max(1, min(config.warmup_steps, config.steps // 10))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, config.steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train(
    config: TrainingConfig, progress: Callable[[int, int, float], Any] | None = None
) -> dict[str, Any]:
    """Train the boundary network, write its weights and the training record.

    Parameters
    ----------
    config : TrainingConfig
        What to train on and how.
    progress : callable, optional
        Called after every step as ``progress(step, steps, loss)``.

    Returns
    -------
    dict
        The training record (also written to :func:`record_path`): data,
        steps, seconds, hardware, losses and validation scores per held-out volume.
    """
    start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    sources = config.data_sources()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model, model_config = _initial_model(config)
        samples = make_training_samples(
            sources,
            pixel_size_nm=model_config["pixel_size_nm"],
            phantoms=config.phantoms,
            phantom_shape=config.phantom_shape,
            seed=config.seed,
            normalization=model_config["normalization"],
        )
        sampler = PatchSampler(
            samples, config.patch_size, seed=config.seed, augment=config.augment
        )
        model.to(device=device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
        amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
        losses: list[float] = []
        for step in range(config.steps):
            images, targets, masks = (
                torch.from_numpy(a).to(device) for a in sampler.batch(config.batch_size)
            )
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(images.contiguous(memory_format=torch.channels_last))
            loss = boundary_loss(logits.float(), targets, masks, config.dice_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, config.steps, losses[-1])
    model.eval()
    train_seconds = time.perf_counter() - start
    output = save_model(model, model_config, config.output)
    validation = {}
    if config.validate:
        validation = _validate(model, model_config, _validation_sets(config, sources), device)
    tail = losses[-max(1, len(losses) // 10) :] if losses else []
    planes: dict[str, int] = {}
    for s in samples:
        planes[s.source] = planes.get(s.source, 0) + 1
    record = {
        "weights": str(output),
        "weights_bytes": output.stat().st_size,
        "weights_sha256": hashlib.sha256(output.read_bytes()).hexdigest(),
        "model_config": model_config,
        "training_config": asdict(config),
        "data": [
            {
                "name": s.label,
                "path": s.path,
                "voxel_size": list(s.voxel_size),
                "held_out_sections": s.held_out(npz_shape(s.path, s.raw)[0]),
                "training_planes": planes.get(s.label, 0),
            }
            for s in sources
        ],
        "phantom_planes": {k: v for k, v in planes.items() if k.startswith("phantom")},
        "steps": config.steps,
        "seconds": round(train_seconds, 2),
        "hardware": _hardware(device),
        "torch_version": torch.__version__,
        "first_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(tail)) if tail else None,
        "loss_curve": [
            [i + 1, float(np.mean(losses[max(0, i - 9) : i + 1]))]
            for i in range(0, len(losses), max(1, len(losses) // 100))
        ],
        "validation": validation,
        "validation_note": "pixel-wise scores of held-out sections predicted at their own "
        "voxel size (xy planes); f1 at threshold 0.5",
    }
    record_path(output).write_text(json.dumps(record, indent=2, default=str))
    return record


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command line of :func:`train`.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).
    prog : str, optional
        Program name shown in the help.

    Returns
    -------
    int
        Exit status.
    """
    choose = argparse.ArgumentParser(add_help=False)
    choose.add_argument("--target", choices=("boundaries", "synapses"), default="boundaries")
    known, rest = choose.parse_known_args(argv)
    if known.target == "synapses":  # the synapse network has its own options
        from .synapse_training import main as synapse_main

        return synapse_main(rest, prog=f"{prog} --target synapses" if prog else None)
    parser = argparse.ArgumentParser(
        prog=prog or "python -m napari_connectome.models.training",
        description=__doc__.split("\n")[0],
    )
    parser.add_argument(
        "--target",
        choices=("boundaries", "synapses"),
        default="boundaries",
        help="what to train: the boundary model (default) or the synapse model "
        "('--target synapses --help' lists its options)",
    )
    parser.add_argument("--output", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--data-dir", help="folder of the real .npz volumes (../shared/data)")
    parser.add_argument("--phantoms", type=int, default=4, help="phantom volumes added (0: none)")
    parser.add_argument(
        "--phantom-shape", type=int, nargs=3, default=(16, 384, 384), metavar=("Z", "Y", "X")
    )
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init-weights", help="weights file to fine-tune from")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    config = TrainingConfig(
        output=args.output,
        data_dir=args.data_dir,
        phantoms=args.phantoms,
        phantom_shape=tuple(args.phantom_shape),
        steps=args.steps,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.lr,
        seed=args.seed,
        device=args.device,
        init_weights=args.init_weights,
        model={"base_channels": args.base_channels, "depth": args.depth},
        validate=not args.no_validate,
        num_threads=args.threads,
    )
    every = max(1, args.steps // 50)

    def report(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            print(f"step {step}/{steps} loss {loss:.4f}", flush=True)

    record = train(config, report)
    print(json.dumps({k: record[k] for k in ("weights", "seconds", "final_loss")}))
    print(json.dumps(record["validation"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
