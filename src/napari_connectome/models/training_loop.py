"""What the boundary and the synapse training share.

The optimisation loop (AdamW, linear warm-up then a cosine to 5 %, seeded so
that runs on the CPU are reproducible), the training record written beside the
weights, and the command-line options common to ``napari-connectome train`` and
``napari-connectome train --target synapses``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .datasets import DataSource, npz_shape
from .weights import resolve_device

__all__ = [
    "add_training_arguments",
    "config_arguments",
    "optimise",
    "record_path",
    "run_training",
    "sample_options",
    "start_run",
    "training_record",
    "write_record",
]


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


def _lr_factor(config) -> Callable[[int], float]:
    warm = max(1, min(config.warmup_steps, config.steps // 10))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, config.steps - warm)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def start_run(config) -> tuple[float, torch.device, list[DataSource]]:
    """Start a training run: the clock, torch's CPU threads, the device, the sources.

    Parameters
    ----------
    config : TrainingConfig or SynapseTrainingConfig
        ``num_threads`` (None: leave as is), ``device`` and ``data_sources()`` are used.

    Returns
    -------
    tuple
        ``(time.perf_counter() at the start, torch.device, list of DataSource)``.
    """
    start = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    return start, resolve_device(config.device), config.data_sources()


def sample_options(config, model_config: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of the sample builders: the model's pixel size and normalisation.

    Parameters
    ----------
    config : TrainingConfig or SynapseTrainingConfig
        ``phantoms``, ``phantom_shape`` and ``seed`` are used.
    model_config : dict
        The network's configuration.

    Returns
    -------
    dict
        ``pixel_size_nm``, ``phantoms``, ``phantom_shape``, ``seed``, ``normalization``.
    """
    return {
        "pixel_size_nm": model_config["pixel_size_nm"],
        "phantoms": config.phantoms,
        "phantom_shape": config.phantom_shape,
        "seed": config.seed,
        "normalization": model_config["normalization"],
    }


class _BatchStream(torch.utils.data.IterableDataset):
    """Endless batches of a patch sampler, each loading worker with its own seed."""

    def __init__(self, sampler, batch_size: int, seed: int):
        self.sampler, self.batch_size, self.seed = sampler, batch_size, seed

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        if worker is not None:  # the DataLoader already gave each worker one thread
            self.sampler.reseed([self.seed, worker.id])
        while True:
            yield self.sampler.batch(self.batch_size)


def batch_stream(sampler, batch_size: int, seed: int, workers: int = 0, pin: bool = False):
    """Iterate over training batches, drawn here or by parallel worker processes.

    Parameters
    ----------
    sampler : PatchSampler
        ``sampler.batch(n)`` gives a tuple of numpy arrays; with workers,
        ``sampler.reseed(seed)`` restarts its generator.
    batch_size : int
        Patches per batch.
    seed : int
        Seed of the workers' generators (worker ``i`` uses ``[seed, i]``).
    workers : int
        Loading processes; 0 draws every batch in this process from ``sampler``'s
        own generator (the batches of the runs before workers existed).
    pin : bool
        Page-locked batches, for fast copies to a GPU (with workers only).

    Yields
    ------
    tuple of torch.Tensor
        One batch. With workers the order is fixed (the workers take turns), so a
        run is reproducible for a given number of workers. Closing the generator
        (or dropping it) stops the workers.
    """
    if workers <= 0:
        while True:
            yield tuple(torch.from_numpy(a) for a in sampler.batch(batch_size))
    # On Linux the workers are forked: they share the training planes instead of each
    # unpickling a copy, and they never touch CUDA (numpy and scipy only). Elsewhere
    # the platform's default start method is safer.
    context = "fork" if sys.platform.startswith("linux") else None
    loader = torch.utils.data.DataLoader(
        _BatchStream(sampler, batch_size, seed),
        batch_size=None,
        num_workers=workers,
        pin_memory=pin,
        multiprocessing_context=context,
    )
    yield from loader


def optimise(
    config,
    device: torch.device,
    setup: Callable[[], tuple],
    loss: Callable[..., torch.Tensor],
    progress: Callable[[int, int, float], Any] | None = None,
    *,
    amp: bool = False,
    deadline: float | None = None,
    stop_after: int | None = None,
) -> tuple[torch.nn.Module, dict[str, Any], list, list[float]]:
    """Seed, set up and run the optimisation loop shared by the networks.

    Parameters
    ----------
    config : TrainingConfig or SynapseTrainingConfig
        ``seed``, ``steps``, ``batch_size``, ``workers``, ``learning_rate``,
        ``weight_decay`` and ``warmup_steps`` are used (AdamW, linear warm-up,
        cosine to 5 %; :func:`batch_stream` for the workers).
    device : torch.device
        Where to train.
    setup : callable
        Called once the seed is set: returns ``(model, model_config, samples,
        sampler)``; ``sampler.batch(n)`` gives the images first, then what
        ``loss`` takes.
    loss : callable
        ``loss(logits, *rest_of_batch)``, the logits as float32.
    progress : callable, optional
        ``progress(step, steps, loss)`` after every step.
    amp : bool
        Run the forward pass in bfloat16 autocast.
    deadline : float, optional
        ``time.perf_counter()`` value after which no further step starts.
    stop_after : int, optional
        Stop after this many steps, the learning-rate schedule still spanning
        ``config.steps`` (a run cut by ``deadline`` repeated exactly).

    Returns
    -------
    tuple
        ``(model in eval mode, model_config, samples, losses)``; fewer losses than
        ``config.steps`` when the deadline or ``stop_after`` stopped the loop.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model, model_config, samples, sampler = setup()
        model.to(device=device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config))
        losses: list[float] = []
        batches = batch_stream(
            sampler,
            config.batch_size,
            config.seed,
            config.workers,
            pin=device.type == "cuda",
        )
        try:
            for step in range(config.steps):
                if deadline is not None and time.perf_counter() > deadline:
                    break
                if stop_after is not None and step >= stop_after:
                    break
                images, *rest = (a.to(device, non_blocking=True) for a in next(batches))
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(images.contiguous(memory_format=torch.channels_last))
                value = loss(logits.float(), *rest)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                scheduler.step()
                losses.append(float(value.detach()))
                if progress is not None:
                    progress(step + 1, config.steps, losses[-1])
        finally:
            batches.close()  # ends the loading workers at once
    model.eval()
    return model, model_config, samples, losses


def training_record(
    output: Path,
    model_config: dict[str, Any],
    config,
    sources: list[DataSource],
    samples: list,
    losses: list[float],
    seconds: float,
    device: torch.device,
    *,
    source_fields: Callable[[DataSource], dict] | None = None,
    stopped_early: bool | None = None,
) -> dict[str, Any]:
    """Describe a training run: weights, data, losses, hardware.

    Parameters
    ----------
    output : pathlib.Path
        The written weights file.
    model_config : dict
        The network's configuration.
    config : dataclass
        The training configuration (stored whole).
    sources : list of DataSource
        Real volumes trained on.
    samples : list
        Training planes (with ``source``), counted per source.
    losses : list of float
        Loss of every step.
    seconds : float
        Training time.
    device : torch.device
        Where it trained.
    source_fields : callable, optional
        Further fields of a source's entry (placed after its path).
    stopped_early : bool, optional
        Recorded after ``steps`` when given.

    Returns
    -------
    dict
        The training record, with an empty ``"validation"``.
    """
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
                **(source_fields(s) if source_fields else {}),
                "voxel_size": list(s.voxel_size),
                "held_out_sections": s.held_out(npz_shape(s.path, s.raw)[0]),
                "training_planes": planes.get(s.label, 0),
            }
            for s in sources
        ],
        "phantom_planes": {k: v for k, v in planes.items() if k.startswith("phantom")},
        "steps": len(losses),
    }
    if stopped_early is not None:
        record["stopped_early"] = stopped_early
    record.update(
        {
            "seconds": round(seconds, 2),
            "hardware": _hardware(device),
            "torch_version": torch.__version__,
            "first_loss": losses[0] if losses else None,
            "final_loss": float(np.mean(tail)) if tail else None,
            "loss_curve": [
                [i + 1, float(np.mean(losses[max(0, i - 9) : i + 1]))]
                for i in range(0, len(losses), max(1, len(losses) // 100))
            ],
            "validation": {},
        }
    )
    return record


def write_record(record: dict[str, Any], weights: str | Path | None = None) -> Path:
    """Write a training record beside its weights (see :func:`record_path`).

    Parameters
    ----------
    record : dict
        The record (JSON; other values are written as text).
    weights : str or pathlib.Path, optional
        The weights file (default: ``record["weights"]``).

    Returns
    -------
    pathlib.Path
        The written record.
    """
    path = record_path(weights if weights is not None else record["weights"])
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


def add_training_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """Add the command-line options shared by both networks.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser.
    config_class : type
        :class:`TrainingConfig` or the synapse one: its field defaults are the options'.
    """
    default = {f.name: f.default for f in fields(config_class)}
    parser.add_argument("--output", required=True, help="weights file to write (.safetensors)")
    parser.add_argument("--data-dir", help="folder of the real .npz volumes (../shared/data)")
    parser.add_argument(
        "--phantoms", type=int, default=default["phantoms"], help="phantom volumes added (0: none)"
    )
    parser.add_argument(
        "--phantom-shape",
        type=int,
        nargs=3,
        default=default["phantom_shape"],
        metavar=("Z", "Y", "X"),
    )
    parser.add_argument("--steps", type=int, default=default["steps"])
    parser.add_argument("--batch-size", type=int, default=default["batch_size"])
    parser.add_argument("--patch-size", type=int, default=default["patch_size"])
    parser.add_argument("--lr", type=float, default=default["learning_rate"])
    parser.add_argument("--seed", type=int, default=default["seed"])
    parser.add_argument("--device", default=default["device"])
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--workers",
        type=int,
        default=default["workers"],
        help="processes drawing training patches in parallel (0: in the training "
        "process, as runs before this option); use most CPU cores when training on a GPU",
    )
    parser.add_argument("--no-validate", action="store_true")


def config_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """Turn the options of :func:`add_training_arguments` into configuration fields.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options.

    Returns
    -------
    dict
        Keyword arguments of the training configuration.
    """
    return {
        "output": args.output,
        "data_dir": args.data_dir,
        "phantoms": args.phantoms,
        "phantom_shape": tuple(args.phantom_shape),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "learning_rate": args.lr,
        "seed": args.seed,
        "device": args.device,
        "num_threads": args.threads,
        "workers": args.workers,
        "validate": not args.no_validate,
    }


def run_training(train_function: Callable, config) -> int:
    """Train from the command line: print the progress, the summary and the validation.

    Parameters
    ----------
    train_function : callable
        :func:`train` or the synapse one, called as ``train_function(config, progress)``.
    config : dataclass
        Its configuration.

    Returns
    -------
    int
        Exit status 0.
    """
    every = max(1, config.steps // 50)

    def report(step: int, steps: int, loss: float) -> None:
        if step % every == 0 or step == steps:
            print(f"step {step}/{steps} loss {loss:.4f}", flush=True)

    record = train_function(config, report)
    print(json.dumps({k: record[k] for k in ("weights", "seconds", "final_loss")}))
    print(json.dumps(record["validation"], indent=2))
    return 0
