"""The ``napari-connectome`` command line: the plugin's work without a screen.

Subcommands
-----------
demo
    Open napari with the sample phantom, its truth and the plugin's docks; with
    ``--headless`` (or no display) write the outputs and a window screenshot.
evaluate
    Score a segmentation against ground truth (VOI split/merge, adapted Rand).
phantom
    Write an EM phantom volume with its exact truth to an ``.npz`` file.
train
    Train the boundary model on real volumes and phantoms (reproduces the shipped weights).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

VOLUME_HELP = (
    "a volume: PATH or PATH:ARRAY, e.g. vol.npz:raw, vol.h5:/volumes/raw, vol.zarr/raw, vol.tif"
)


#: The plugin's docks the demo opens.
DEMO_DOCKS = ("Phantom", "Evaluate")


class CommandError(Exception):
    """A user-facing error: printed as one clear message, exit status 2."""


def _positive_triple(values, what: str) -> tuple:
    if values is None:
        return None
    if len(values) != 3 or any(v <= 0 for v in values):
        raise CommandError(f"{what} needs three positive numbers Z Y X; got {values}")
    return tuple(values)


# ---------------------------------------------------------------- evaluate
def _read_labels(spec: str):
    from .io import VolumeError, read_array

    try:
        return read_array(spec)
    except VolumeError as error:
        raise CommandError(str(error)) from error


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Print VOI and adapted Rand error of a segmentation against ground truth."""
    from .core.metrics import evaluate_segmentation

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
    from .synthetic import make_phantom, save_phantom

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
            voxel_size=_positive_triple(args.voxel_size, "--voxel-size"),
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
    from .models.training import main as train_main

    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    return train_main(arguments, prog="napari-connectome train")


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with the sample phantom and the docks, or write them headless."""
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    headless = args.headless or not has_display
    if not headless:
        import napari

        viewer = _demo_viewer(napari, show=True)
        del viewer
        napari.run()
        return 0

    from ._virtual_display import DisplayError, virtual_display

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    try:
        if os.environ.get("DISPLAY"):
            written = _write_demo_outputs(output)
        else:
            with virtual_display():
                written = _write_demo_outputs(output)
    except DisplayError as error:
        raise CommandError(str(error)) from error
    print(f"wrote {len(written)} files to {output}/:")
    for path in written:
        print(f"  {path}")
    return 0


def _demo_viewer(napari, *, show: bool):
    from ._sample_data import load_sample_phantom

    viewer = napari.Viewer(title="napari-connectome demo", show=show)
    for data, kwargs, layer_type in load_sample_phantom():
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    for widget_name in DEMO_DOCKS:
        viewer.window.add_plugin_dock_widget("napari-connectome", widget_name, tabify=True)
    viewer.window.resize(1600, 1000)
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    viewer.reset_view()
    return viewer


def _write_demo_outputs(output: Path) -> list[Path]:
    import napari
    import numpy as np
    from skimage.io import imsave

    viewer = _demo_viewer(napari, show=True)
    try:
        layers = {layer.name: layer for layer in viewer.layers}
        neurons = layers["neurons (truth)"].data
        synapses = layers["synapses (truth)"].data
        summary = {
            "sample": "napari-connectome phantom",
            "shape_zyx": list(layers["EM"].data.shape),
            "voxel_size_nm": list(layers["EM"].scale),
            "neurons": int(len(_unique_ids(neurons))),
            "synapses": int(len(_unique_ids(synapses))),
            "layers": [layer.name for layer in viewer.layers],
            "docks": list(DEMO_DOCKS),
        }
        from qtpy.QtWidgets import QApplication

        QApplication.processEvents()  # let the docks lay out before the screenshot
        screenshot = viewer.screenshot(canvas_only=False, flash=False)
    finally:
        viewer.close()
    screenshot_path = output / "napari_window.png"
    imsave(screenshot_path, np.asarray(screenshot), check_contrast=False)
    summary_path = output / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return [screenshot_path, summary_path]


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for all subcommands.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand sets ``func``.
    """
    parser = argparse.ArgumentParser(
        prog="napari-connectome",
        description="Connectomics from EM volumes: segment, proofread, review, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit status: 0 on success, 2 on a user error.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # its options belong to the training module's parser
        argv = ["train", "--", *argv[1:]]
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CommandError as error:
        print(f"napari-connectome {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
