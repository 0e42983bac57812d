r"""Train the synapse network and record how it does on held-out sections.

Command line (what made the shipped weights; see docs/SYNAPSE_MODEL.md)::

    napari-connectome train --target synapses --data-dir ../shared/data \\
        --output src/napari_connectome/models/weights/synapse_unet.safetensors

The network is the boundary U-Net (:mod:`~.unet`) with two output channels
(synapse, presynaptic side) or, with ``--post-weight W`` > 0, three (and the
postsynaptic side; see :mod:`~.synapse_data`),
started from the bundled boundary model's weights (or from a synapse model's),
trained with the same augmentation and canonical pixel size, and validated on
the held-out sections with the object detection scores of
:mod:`napari_connectome.core.synapse_metrics`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .datasets import DataSource, held_out_volumes
from .losses import boundary_loss, boundary_scores
from .synapse_data import (
    SynapsePatchSampler,
    default_synapse_sources,
    make_synapse_samples,
    phantom_synapse_volumes,
)
from .synapse_inference import SYNAPSE_CHANNELS, SYNAPSE_OUTPUT, predict_synapse_maps
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
from .weights import bundled_model_path, load_model, save_model

__all__ = ["SynapseTrainingConfig", "main", "train_synapses", "validate_synapse_model"]


@dataclass
class SynapseTrainingConfig:
    """Everything a synapse training run depends on (stored in the training record).

    Attributes
    ----------
    output : str
        Weights file to write; the record goes to ``<stem>.training.json``.
    data_dir : str or None
        Folder of the real volumes (:func:`~.synapse_data.default_synapse_sources`).
    phantoms : int
        Phantom volumes added to the training data.
    phantom_shape : tuple of int
        Shape of the anisotropic phantoms.
    steps, batch_size, patch_size : int
        Optimisation steps, patches per step, patch edge (canonical pixels).
    learning_rate, weight_decay : float
        AdamW settings (linear warm-up, then a cosine to 5 %).
    warmup_steps : int
        Length of the warm-up.
    dice_weight : float
        Weight of the soft Dice term of each channel.
    pre_weight : float
        Weight of the presynaptic channel's loss.
    post_weight : float
        Weight of the postsynaptic channel's loss; 0 (the default) trains a
        two-channel model without that channel.
    positive_fraction : float
        Share of patches centred on a synapse.
    init_weights : str or None
        Boundary (or synapse) weights to start from; ``"bundled"``: the bundled
        boundary model; None: random. Output channels the source lacks start as
        copies of its last one (the boundary map; for a two-channel synapse model
        the presynaptic zone, the postsynaptic zone's mirror).
    seed : int
        Seed of everything random.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    num_threads : int or None
        CPU threads of torch.
    workers : int
        Processes drawing training patches in parallel (0: in the training process).
    validate : bool
        Score the held-out sections after training.
    max_minutes : float or None
        Wall-clock budget of the optimisation: training stops early (and says so
        in the record) when it is spent. None: no limit.
    stop_after_steps : int or None
        Stop after this many steps, the learning-rate schedule still spanning
        ``steps``: repeats exactly a run that ``max_minutes`` stopped (its record's
        ``steps``). None: run every step.
    """

    output: str
    data_dir: str | None = None
    phantoms: int = 6
    phantom_shape: tuple[int, int, int] = (24, 384, 384)
    steps: int = 500
    batch_size: int = 8
    patch_size: int = 160
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    dice_weight: float = 0.5
    pre_weight: float = 0.5
    post_weight: float = 0.0
    positive_fraction: float = 0.5
    init_weights: str | None = "bundled"
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    workers: int = 0
    validate: bool = True
    max_minutes: float | None = None
    stop_after_steps: int | None = None

    def data_sources(self) -> list[DataSource]:
        """Real volumes used (the defaults of ``data_dir``)."""
        return default_synapse_sources(self.data_dir) if self.data_dir else []


def _initial_model(config: SynapseTrainingConfig):
    if config.pre_weight < 0 or config.post_weight < 0:
        raise ValueError(
            f"the channel loss weights must be >= 0; got pre {config.pre_weight}, "
            f"post {config.post_weight}"
        )
    channels = len(SYNAPSE_CHANNELS) if config.post_weight > 0 else 2
    model_config = default_config(out_channels=channels, output=SYNAPSE_OUTPUT)
    model = build_model(model_config)
    if not config.init_weights:
        return model, model_config
    path = bundled_model_path() if config.init_weights == "bundled" else config.init_weights
    source, source_config = load_model(path)
    for key in ("base_channels", "depth", "norm", "pixel_size_nm", "normalization"):
        model_config[key] = source_config[key]
    model = build_model(model_config)
    state = source.state_dict()
    own = model.state_dict()
    have = int(source_config.get("out_channels", 1))
    if have > channels:
        raise ValueError(
            f"{path} has {have} output channels but this run trains {channels}: pass "
            "--post-weight W (> 0) to keep training its postsynaptic channel"
        )
    for key, value in state.items():
        if key in own and own[key].shape == value.shape:
            own[key] = value
        elif key.startswith("head.") and key in own:  # fewer channels: copy, repeat the last
            grown = value[-1:].expand_as(own[key]).clone()
            grown[: value.shape[0]] = value
            own[key] = grown
    model.load_state_dict(own)
    return model, model_config


def _loss(logits, targets, masks, partner_mask, config: SynapseTrainingConfig):
    """Synapse loss everywhere, plus the partner channels' where they have truth."""
    total = boundary_loss(logits[:, :1], targets[:, :1], masks, config.dice_weight)
    side_mask = masks * partner_mask
    if float(side_mask.sum()) == 0:
        return total
    for channel, weight in ((1, config.pre_weight), (2, config.post_weight)):
        if weight == 0:
            continue
        side = slice(channel, channel + 1)
        total = total + weight * boundary_loss(
            logits[:, side], targets[:, side], side_mask, config.dice_weight
        )
    return total


def train_synapses(
    config: SynapseTrainingConfig, progress: Callable[[int, int, float], Any] | None = None
) -> dict[str, Any]:
    """Train the synapse network, write its weights and the training record.

    Parameters
    ----------
    config : SynapseTrainingConfig
        What to train on and how.
    progress : callable, optional
        ``progress(step, steps, loss)`` after every step.

    Returns
    -------
    dict
        The training record (also written to :func:`~.training.record_path`).
    """
    start, device, sources = start_run(config)

    def setup():
        model, model_config = _initial_model(config)
        samples = make_synapse_samples(
            sources,
            **sample_options(config, model_config),
            postsynaptic=model_config["out_channels"] > 2,
        )
        sampler = SynapsePatchSampler(
            samples,
            config.patch_size,
            seed=config.seed,
            positive_fraction=config.positive_fraction,
        )
        return model, model_config, samples, sampler

    def loss(logits, targets, masks, pre_weight):
        return _loss(logits, targets, masks, pre_weight, config)

    deadline = start + 60 * config.max_minutes if config.max_minutes else None
    # no bfloat16 autocast, unlike the boundary network: it has always trained in float32
    model, model_config, samples, losses = optimise(
        config,
        device,
        setup,
        loss,
        progress,
        deadline=deadline,
        stop_after=config.stop_after_steps,
    )
    seconds = time.perf_counter() - start
    output = save_model(model, model_config, config.output)
    record = training_record(
        output,
        model_config,
        config,
        sources,
        samples,
        losses,
        seconds,
        device,
        source_fields=lambda s: {"target": s.membranes},
        stopped_early=len(losses) < config.steps,
    )
    write_record(record)  # kept should the validation fail
    if config.validate:
        record["validation"] = validate_synapse_model(
            output, config.data_dir, seed=config.seed, phantom_shape=config.phantom_shape
        )
        write_record(record)
    return record


def validation_sets(data_dir, seed: int = 0, phantom_shape=(24, 384, 384)) -> list[dict]:
    """Held-out sections of the real volumes and two phantoms of unseen seeds.

    Parameters
    ----------
    data_dir : str or None
        Folder of the real volumes (None: phantoms only).
    seed : int
        Training seed (the phantoms use ``seed + 10_000`` and ``seed + 10_001``).
    phantom_shape : tuple of int
        Shape of the anisotropic phantom.

    Returns
    -------
    list of dict
        ``{"name", "raw", "truth" (synapse ids), "voxel_size", "sections"}``, plus
        ``"neurons"`` and ``"table"`` for phantoms.
    """
    from ..core.synapse_metrics import synapse_regions

    sources = default_synapse_sources(data_dir) if data_dir else []
    sets = held_out_volumes(sources, truth=lambda s, archive: np.asarray(archive[s.membranes]))
    for item in sets:  # a synapse is a connected region (ISBI's ids cut regions in pieces)
        item["truth"] = synapse_regions(item["truth"])
    for ph in phantom_synapse_volumes(2, phantom_shape, seed + 10_000, sides=()):
        p = ph["phantom"]
        sets.append(
            {
                "name": f"phantom_validation_{ph['name']}",
                "raw": ph["raw"],
                "truth": p.synapses,
                "voxel_size": ph["voxel_size"],
                "sections": list(range(ph["raw"].shape[0])),
                "neurons": p.neurons,
                "table": p.synapse_table,
            }
        )
    return sets


def validate_synapse_model(weights, data_dir, seed: int = 0, phantom_shape=(24, 384, 384)):
    """Score a synapse model on the held-out sections and unseen phantoms.

    Parameters
    ----------
    weights : str or pathlib.Path
        The synapse weights.
    data_dir : str or None
        Folder of the real volumes.
    seed : int
        Training seed (see :func:`validation_sets`).
    phantom_shape : tuple of int
        Shape of the anisotropic validation phantom.

    Returns
    -------
    dict
        Per set: pixel scores of the synapse channel and object detection scores
        (precision, recall, F1 within 200 nm), and partner accuracy on phantoms.
    """
    from ..core.synapse_metrics import detection_scores, partner_accuracy, truth_partner_rows
    from ..core.synapses import DETECTION_DEFAULTS, assign_partners, detect_synapses

    model = load_model(weights)
    scores = {}
    for item in validation_sets(data_dir, seed, phantom_shape):
        maps = predict_synapse_maps(item["raw"], item["voxel_size"], model, device="cpu")
        found = detect_synapses(maps.synapse, item["voxel_size"], **DETECTION_DEFAULTS)
        entry = {
            "sections": [int(z) for z in item["sections"]],
            "voxel_size": list(item["voxel_size"]),
            "pixel": boundary_scores(maps.synapse, item["truth"] > 0),
            "detection": detection_scores(found, item["truth"], item["voxel_size"]),
        }
        if "neurons" in item:
            table = assign_partners(
                found, item["neurons"], maps.presynaptic, maps.postsynaptic, synapse=maps.synapse
            )
            truth_rows = truth_partner_rows(item["table"], item["voxel_size"])
            entry["partners"] = partner_accuracy(table, truth_rows)
        scores[item["name"]] = entry
    return scores


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Command line of :func:`train_synapses`.

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
    parser = argparse.ArgumentParser(
        prog=prog or "python -m napari_connectome.models.synapse_training",
        description=__doc__.split("\n")[0],
    )
    add_training_arguments(parser, SynapseTrainingConfig)
    parser.add_argument(
        "--init-weights",
        default="bundled",
        help="weights to start from ('bundled': the boundary model; 'none')",
    )
    parser.add_argument(
        "--max-minutes", type=float, help="stop training after this wall time (minutes)"
    )
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        help="stop after this many steps, the learning-rate schedule still spanning "
        "--steps (repeats a run that --max-minutes stopped)",
    )
    parser.add_argument(
        "--pre-weight",
        type=float,
        default=SynapseTrainingConfig.pre_weight,
        help="weight of the presynaptic-side channel's loss (default 0.5)",
    )
    parser.add_argument(
        "--post-weight",
        type=float,
        default=SynapseTrainingConfig.post_weight,
        help="weight of the postsynaptic-side channel's loss (default 0: a two-channel "
        "model without it)",
    )
    parser.add_argument(
        "--validate-only",
        action="store_true",
        help="only score the existing --output weights and update the record",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.validate_only:
        scores = validate_synapse_model(
            args.output, args.data_dir, args.seed, tuple(args.phantom_shape)
        )
        path = record_path(args.output)
        record = json.loads(path.read_text()) if path.is_file() else {}
        record["validation"] = scores
        write_record(record, args.output)
        print(json.dumps(scores, indent=2))
        return 0
    config = SynapseTrainingConfig(
        **config_arguments(args),
        init_weights=None if args.init_weights == "none" else args.init_weights,
        max_minutes=args.max_minutes,
        stop_after_steps=args.stop_after_steps,
        pre_weight=args.pre_weight,
        post_weight=args.post_weight,
    )
    return run_training(train_synapses, config)


if __name__ == "__main__":
    raise SystemExit(main())
