"""``demo``, ``evaluate``, ``phantom`` and ``train``: the small subcommands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ._common import VOLUME_HELP, CommandError, positive_triple


# ---------------------------------------------------------------- evaluate
def _read_labels(spec: str):
    from ..io import VolumeError, read_array

    try:
        return read_array(spec)
    except VolumeError as error:
        raise CommandError(str(error)) from error


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print VOI and adapted Rand error of a segmentation against ground truth."""
    from ..core.metrics import evaluate_segmentation

    segmentation = _read_labels(args.segmentation)
    ground_truth = _read_labels(args.ground_truth)
    try:
        scores = evaluate_segmentation(segmentation, ground_truth)
    except (ValueError, TypeError) as error:
        raise CommandError(str(error)) from error
    if args.json:
        print(json.dumps(scores))
        return 0
    print(f"segmentation   {args.segmentation}")
    print(f"ground truth   {args.ground_truth}")
    print(f"voxels scored  {scores['n_voxels']} (ground-truth label 0 ignored)")
    print(f"VOI split      {scores['voi_split']:.4f} bits  (false splits)")
    print(f"VOI merge      {scores['voi_merge']:.4f} bits  (false merges)")
    print(f"VOI            {scores['voi']:.4f} bits")
    print(f"adapted Rand   {scores['arand']:.4f}  (CREMI convention; 0 is perfect)")
    return 0


# ---------------------------------------------------------------- phantom
def cmd_phantom(args: argparse.Namespace) -> int:
    """Write an EM phantom with its truth to an ``.npz`` file."""
    from ..synthetic import make_phantom, save_phantom

    output = Path(args.output)
    if output.suffix != ".npz":
        raise CommandError(
            f"the phantom is written as .npz; got '{output}' (use e.g. phantom.npz)"
        )
    if output.exists() and not args.overwrite:
        raise CommandError(f"'{output}' exists; pass --overwrite to replace it")
    try:
        phantom = make_phantom(
            shape=tuple(args.shape),
            voxel_size=positive_triple(args.voxel_size, "--voxel-size"),
            seed=args.seed,
            missing_sections=tuple(args.missing_sections),
            shifted_sections=tuple(args.shifted_sections),
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    save_phantom(phantom, output)
    print(
        f"wrote {output}: raw {phantom.raw.shape} uint8 at {phantom.voxel_size} nm, "
        f"{len(_unique_ids(phantom.neurons))} neurons, "
        f"{len(_unique_ids(phantom.synapses))} synapses"
    )
    return 0


def _unique_ids(labels):
    import numpy as np

    ids = np.unique(labels)
    return ids[ids != 0]


# ---------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train the boundary model; the arguments are those of the training module."""
    from ..models.training import main as train_main

    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    return train_main(arguments, prog="napari-connectome train")


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with the sample segmented and the docks, or write the outputs headless."""
    from .. import _demo

    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not (args.headless or not has_display):
        _demo.run_interactive()
        return 0

    from .._virtual_display import DisplayError, virtual_display

    output = Path(args.output)
    try:
        if os.environ.get("DISPLAY"):
            written = _demo.write_headless_outputs(output)
        else:
            with virtual_display():
                written = _demo.write_headless_outputs(output)
    except DisplayError as error:
        raise CommandError(str(error)) from error
    print(f"wrote {len(written)} outputs to {output}/:")
    for path in written:
        print(f"  {path}")
    return 0


def add_parsers(sub) -> None:
    """Add ``demo``, ``evaluate``, ``phantom`` and ``train`` to the subparsers ``sub``."""
    demo = sub.add_parser("demo", help="open napari with the sample phantom and the docks")
    demo.add_argument("--headless", action="store_true", help="no window: write files instead")
    demo.add_argument(
        "--output", default="napari-connectome-output", help="folder for headless outputs"
    )
    demo.set_defaults(func=cmd_demo)

    evaluate = sub.add_parser("evaluate", help="score a segmentation against ground truth")
    evaluate.add_argument("segmentation", help=VOLUME_HELP)
    evaluate.add_argument("ground_truth", help=VOLUME_HELP + " (label 0 is ignored)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(func=cmd_evaluate)

    phantom = sub.add_parser("phantom", help="write an EM phantom with its truth (.npz)")
    phantom.add_argument("output", help="the .npz file to write")
    phantom.add_argument("--shape", type=int, nargs=3, default=(32, 256, 256), metavar="N")
    phantom.add_argument(
        "--voxel-size", type=float, nargs=3, default=(40.0, 4.0, 4.0), metavar="NM"
    )
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--missing-sections", type=int, nargs="*", default=(), metavar="Z")
    phantom.add_argument("--shifted-sections", type=int, nargs="*", default=(), metavar="Z")
    phantom.add_argument("--overwrite", action="store_true")
    phantom.set_defaults(func=cmd_phantom)

    train = sub.add_parser(
        "train",
        help="train the boundary model (see `napari-connectome train --help`)",
        add_help=False,
    )
    train.add_argument("arguments", nargs=argparse.REMAINDER)
    train.set_defaults(func=cmd_train)
