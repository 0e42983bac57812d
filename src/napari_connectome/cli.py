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
segment
    Segment neurons in an EM volume (boundary model, fragments, agglomeration) and
    write the whole segmentation state to a zarr store.
train
    Train the boundary model on real volumes and phantoms (reproduces the shipped weights).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

VOLUME_HELP = (
    "a volume: PATH or PATH:ARRAY, e.g. vol.npz:raw, vol.h5:/volumes/raw, vol.zarr/raw, vol.tif"
)


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


# ---------------------------------------------------------------- segment
class _Progress:
    """Progress on stderr: one updating bar on a terminal, a few plain lines otherwise."""

    def __init__(self, stream=None, width: int = 30):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.width = width
        self.length = 0
        self.last = None

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        filled = int(round(fraction * self.width))
        line = f"[{'#' * filled}{'.' * (self.width - filled)}] {int(fraction * 100):3d}% {message}"
        if self.tty:
            self.stream.write("\r" + line + " " * max(0, self.length - len(line)))
            self.length = len(line)
        else:  # a log file: a line per stage and per 10 %
            key = (message.rstrip("0123456789/ "), int(fraction * 10))
            if key == self.last:
                return
            self.last = key
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.length:
            self.stream.write("\n")
            self.stream.flush()
        self.length = 0


def _segment_input(spec: str):
    import numpy as np

    from .io import VolumeError, open_volume, parse_volume_spec

    try:
        path, array = parse_volume_spec(spec)
        volume = open_volume(path.resolve() if path.exists() else path, array=array)
    except VolumeError as error:
        raise CommandError(str(error)) from error
    kind = volume.dtype.kind
    if kind not in "biuf":
        raise CommandError(f"{volume.source}: expected grey values, got dtype {volume.dtype}")
    data, low, high = volume.data, None, None
    step = max(1, 2**24 // max(1, int(math.prod(volume.shape[1:]))))
    for start in range(0, volume.shape[0], step):  # plane by plane: fail before the model runs
        block = np.asarray(data[start : start + step])
        if kind == "f" and not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
            where = f"section {bad}" if volume.ndim == 3 else f"row {bad}"
            raise CommandError(
                f"{volume.source} contains NaN or infinite values ({where}); "
                "replace them (e.g. numpy.nan_to_num) before segmenting"
            )
        lo, hi = block.min(), block.max()
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    if low == high:
        raise CommandError(
            f"{volume.source} is constant (all voxels = {low}); there is nothing to segment"
        )
    return volume


def _segment_voxel_size(flag, volume) -> tuple[tuple, str]:
    ndim = volume.ndim
    axes = "Z Y X" if ndim == 3 else "Y X"
    if flag is not None:
        if len(flag) != ndim:
            raise CommandError(
                f"--voxel-size needs {ndim} numbers ({axes}) for the {ndim}D volume "
                f"{volume.source} of shape {volume.shape}; got {len(flag)}"
            )
        if not all(math.isfinite(v) and v > 0 for v in flag):
            raise CommandError(f"--voxel-size needs positive numbers (nm); got {list(flag)}")
        return tuple(float(v) for v in flag), "--voxel-size"
    if volume.voxel_size is None:
        raise CommandError(
            f"{volume.source} has no voxel size in its metadata; pass --voxel-size {axes} "
            f"in nm (e.g. --voxel-size {'40 4 4' if ndim == 3 else '4 4'})"
        )
    return tuple(float(v) for v in volume.voxel_size), "metadata"


def _segment_model(name: str, device: str):
    import hashlib

    from .models import ModelFileError, bundled_model_path, load_model
    from .models.weights import resolve_device

    try:
        resolved = resolve_device(device)
        module, config = load_model(name, device=resolved)
    except (ModelFileError, ValueError, RuntimeError) as error:
        raise CommandError(str(error)) from error
    path = bundled_model_path() if name == "bundled" else Path(name).expanduser().resolve()
    info = {
        "name": "bundled" if name == "bundled" else str(path),
        "config": config,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    return (module, config), info, str(resolved)


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment an EM volume and write the segmentation state to a zarr store."""
    import time

    from .io import (
        OutputExistsError,
        VolumeError,
        check_output_path,
        parse_volume_spec,
        write_segmentation_store,
    )

    start = time.perf_counter()
    output = Path(args.output).expanduser()
    if output.suffix.lower() != ".zarr":
        raise CommandError(f"the output is a zarr store and must end in .zarr; got '{output}'")
    try:  # before any work
        check_output_path(output, overwrite=args.overwrite)
    except OutputExistsError:
        raise CommandError(f"'{output}' exists; pass --overwrite to replace it") from None
    except VolumeError as error:
        raise CommandError(str(error)) from error
    source, _ = parse_volume_spec(args.input)
    if output.resolve() in (source.resolve(), *source.resolve().parents):
        raise CommandError(f"'{output}' holds the input {args.input}; write to another path")
    if args.threshold is None:
        from .segmentation import DEFAULT_THRESHOLD

        args.threshold = DEFAULT_THRESHOLD
    if not math.isfinite(args.threshold):
        raise CommandError(f"--threshold must be a number; got {args.threshold}")
    progress = _Progress()
    try:
        volume = _segment_input(args.input)
        voxel_size, size_from = _segment_voxel_size(args.voxel_size, volume)
        model, model_info, device = _segment_model(args.model, args.device)
        from .segmentation import segment_volume

        try:
            result = segment_volume(
                volume.data,
                voxel_size,
                model=model,
                device=device,
                threshold=args.threshold,
                progress=lambda f, m: m == "done" or progress(0.9 * f, m),
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        result.model = model_info
        attrs = {
            "voxel_size": list(result.voxel_size),
            "voxel_size_from": size_from,
            "threshold": float(args.threshold),
            "model": model_info,
            "device": device,
            "input": volume.source,
            "input_shape": list(volume.shape),
            "input_dtype": str(volume.dtype),
        }
        write_segmentation_store(
            output,
            boundaries=result.boundaries,
            fragments=result.fragments,
            graph=result.graph,
            tree=result.tree,
            attrs=attrs,
            overwrite=args.overwrite,
            progress=lambda f, m: progress(0.9 + 0.1 * f, m),
        )
    except KeyboardInterrupt:
        progress.close()
        print("napari-connectome segment: cancelled; nothing was written", file=sys.stderr)
        return 130
    except (OSError, VolumeError) as error:
        raise CommandError(str(error)) from error
    finally:
        progress.close()
    import zarr

    stored = zarr.open_group(str(output), mode="r")
    dtypes = {name: str(stored[name].dtype) for name in ("fragments", "segmentation")}
    n_segments = int(result.table_at(args.threshold).max(initial=0))
    seconds = time.perf_counter() - start
    sizes = " x ".join(f"{v:g}" for v in voxel_size)
    print(f"wrote {output} in {seconds:.1f} s")
    print(f"  input         {volume.source}  {volume.shape} {volume.dtype}")
    print(f"  voxel size    {sizes} nm (from {size_from})")
    print(f"  model         {model_info['name']} on {device}")
    print(f"  fragments     {result.n_fragments}")
    print(f"  segments      {n_segments} at threshold {args.threshold:g}")
    print(
        f"  arrays        boundaries uint8 (p = value / 255), fragments {dtypes['fragments']}, "
        f"segmentation {dtypes['segmentation']}; region_graph ({result.graph.n_edges} edges), "
        f"merge_tree ({len(result.tree)} merges)"
    )
    return 0


# ---------------------------------------------------------------- train
def cmd_train(args: argparse.Namespace) -> int:
    """Train the boundary model; the arguments are those of the training module."""
    from .models.training import main as train_main

    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    return train_main(arguments, prog="napari-connectome train")


# ---------------------------------------------------------------- demo
def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with the sample segmented and the docks, or write the outputs headless."""
    from . import _demo

    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if not (args.headless or not has_display):
        _demo.run_interactive()
        return 0

    from ._virtual_display import DisplayError, virtual_display

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

    segment = sub.add_parser(
        "segment",
        help="segment neurons in an EM volume and write the state to a zarr store",
        description=(
            "Predict neuron boundaries, build fragments, the region graph and the merge "
            "order, and write them with the segmentation at --threshold to OUTPUT.zarr."
        ),
    )
    segment.add_argument("input", help=VOLUME_HELP)
    segment.add_argument("output", help="the zarr store to write (OUTPUT.zarr)")
    segment.add_argument(
        "--voxel-size",
        type=float,
        nargs="+",
        metavar="NM",
        help="voxel size in nm, Z Y X (Y X for 2D); overrides the file's metadata",
    )
    segment.add_argument(
        "--model", default="bundled", help="'bundled' (default) or a weights file"
    )
    segment.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    segment.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="merge-score threshold of the written segmentation "
        "(default: napari_connectome.segmentation.DEFAULT_THRESHOLD)",
    )
    segment.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    segment.set_defaults(func=cmd_segment)

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
