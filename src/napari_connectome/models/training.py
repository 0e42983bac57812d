r"""Train (or fine-tune) the boundary U-Net and record how it does on held-out sections.

Command line (the real training; a few minutes on a GPU, hours on a CPU)::

    napari-connectome train --data-dir ../shared/data \\
        --output src/napari_connectome/models/weights/boundary_unet.safetensors

writes the safetensors weights and ``<stem>.training.json`` (the training
record) next to them. ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .datasets import (
    DataSource,
    PatchSampler,
    default_sources,
    held_out_volumes,
    make_training_samples,
    phantom_volumes,
)
from .inference import predict_boundaries
from .losses import boundary_loss, boundary_scores
from .training_loop import (
    add_training_arguments,
    config_arguments,
    optimise,
    record_path,
    run_training,
    sample_options,
    start_run,
    training_record,
    write_record,
)
from .unet import build_model, default_config
from .weights import load_model, save_model

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
    workers : int
        Processes drawing training patches in parallel (0: in the training process).
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
    workers: int = 0

    def data_sources(self) -> list[DataSource]:
        """Return the real volumes used: ``sources``, else the defaults of ``data_dir``."""
        if self.sources is not None:
            return [s if isinstance(s, DataSource) else DataSource(**s) for s in self.sources]
        return default_sources(self.data_dir) if self.data_dir else []


def _validation_sets(config: TrainingConfig, sources: list[DataSource]) -> list[dict]:
    sets = held_out_volumes(sources)
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
        prob = predict_boundaries(  # the plain network: recorded scores stay comparable
            item["raw"],
            item["voxel_size"],
            (model, model_config),
            device=device,
            planes="xy",
            augment=1,
        )
        scores[item["name"]] = {
            "sections": [int(z) for z in item["sections"]],
            "voxel_size": list(item["voxel_size"]),
            **boundary_scores(prob, item["truth"]),
        }
    return scores


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
    start, device, sources = start_run(config)

    def setup():
        model, model_config = _initial_model(config)
        samples = make_training_samples(sources, **sample_options(config, model_config))
        sampler = PatchSampler(
            samples, config.patch_size, seed=config.seed, augment=config.augment
        )
        return model, model_config, samples, sampler

    def loss(logits, targets, masks):
        return boundary_loss(logits, targets, masks, config.dice_weight)

    amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    model, model_config, samples, losses = optimise(config, device, setup, loss, progress, amp=amp)
    train_seconds = time.perf_counter() - start
    output = save_model(model, model_config, config.output)
    validation = {}
    if config.validate:
        validation = _validate(model, model_config, _validation_sets(config, sources), device)
    record = training_record(
        output, model_config, config, sources, samples, losses, train_seconds, device
    )
    record["validation"] = validation
    record["validation_note"] = (
        "pixel-wise scores of held-out sections predicted at their own "
        "voxel size (xy planes); f1 at threshold 0.5"
    )
    write_record(record)
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
    add_training_arguments(parser, TrainingConfig)
    parser.add_argument("--init-weights", help="weights file to fine-tune from")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    args = parser.parse_args(argv)
    config = TrainingConfig(
        **config_arguments(args),
        init_weights=args.init_weights,
        model={"base_channels": args.base_channels, "depth": args.depth},
    )
    return run_training(train, config)


if __name__ == "__main__":
    raise SystemExit(main())
