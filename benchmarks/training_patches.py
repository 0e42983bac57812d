"""Benchmark how fast training patches are drawn, serially and by parallel workers.

Builds the synapse training planes of ``--phantoms`` phantoms (seed 0; the real
volumes too with ``--data-dir``), then times
``napari_connectome.models.training_loop.batch_stream`` drawing augmented
batches of ``--batch-size`` patches (the synapse training's size and share of
synapse-centred patches): with ``--workers 0`` (the baseline, every patch drawn
in the training process, as before ``--workers`` existed) and with each worker
count asked for. Each figure is the rate over ``--batches`` batches (at least
four per worker) after as many warm-up batches as there are workers, at least
two (the workers' start and the batches they draw meanwhile are not counted).
On a GPU the network takes a batch in a few milliseconds, so this rate bounds
the training speed.

Run ``python benchmarks/training_patches.py`` for a markdown table, ``--json``
for one JSON object with the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from napari_connectome.models.synapse_data import SynapsePatchSampler, make_synapse_samples
from napari_connectome.models.synapse_training import SynapseTrainingConfig
from napari_connectome.models.training_loop import batch_stream, sample_options
from napari_connectome.models.unet import default_config


def patches_per_second(sampler, batch_size: int, workers: int, batches: int) -> float:
    """Rate of :func:`batch_stream` after one warm-up batch per worker (two at least)."""
    stream = batch_stream(sampler, batch_size, seed=0, workers=workers)
    for _ in range(max(2, workers)):
        next(stream)
    batches = max(batches, 4 * workers)
    start = time.perf_counter()
    for _ in range(batches):
        next(stream)
    seconds = time.perf_counter() - start
    stream.close()  # ends the workers
    return batches * batch_size / seconds


def run(phantoms: int, data_dir, batch_size: int, batches: int, workers: list[int]) -> dict:
    # the training run's own planes: its data sources and sample options
    config = SynapseTrainingConfig(output="unused", data_dir=data_dir, phantoms=phantoms)
    samples = make_synapse_samples(
        config.data_sources(),
        **sample_options(config, default_config(out_channels=3)),
        postsynaptic=True,
    )
    sampler = SynapsePatchSampler(
        samples, config.patch_size, seed=0, positive_fraction=config.positive_fraction
    )
    baseline = patches_per_second(sampler, batch_size, 0, batches)
    rows = [{"workers": 0, "patches_per_s": baseline, "speedup": 1.0}]
    for count in (w for w in workers if w > 0):
        rate = patches_per_second(sampler, batch_size, count, batches)
        rows.append({"workers": count, "patches_per_s": rate, "speedup": rate / baseline})
    return {
        "cpu_cores": os.cpu_count(),
        "planes": len(samples),
        "batch_size": batch_size,
        "batches": batches,
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        f"{result['planes']} training planes, batches of {result['batch_size']} patches, "
        f"at least {result['batches']} batches timed (4 per worker), "
        f"{result['cpu_cores']} CPU cores",
        "",
        "| workers | patches/s | vs workers 0 |",
        "|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['workers']} | {row['patches_per_s']:.0f} | {row['speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phantoms", type=int, default=2)
    parser.add_argument("--data-dir", help="folder of the real .npz volumes (../shared/data)")
    parser.add_argument("--batch-size", type=int, default=SynapseTrainingConfig.batch_size)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.phantoms, args.data_dir, args.batch_size, args.batches, args.workers)
    print(json.dumps(result) if args.json else table(result))


if __name__ == "__main__":
    main()
