"""``napari-connectome segment``: EM volume to a segmentation store."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ._common import VOLUME_HELP, CommandError, ProgressLine
from ._synapses import add_synapse_arguments, check_synapse_arguments, run_synapse_detection

#: ``models.inference.AUGMENT_CHOICES`` and ``DEFAULT_AUGMENT``, repeated so that building
#: the parser imports no torch (a test checks they agree).
AUGMENT_CHOICES = (1, 2, 4, 8)
DEFAULT_AUGMENT = 4


def _segment_input(spec: str):
    import numpy as np

    from ..io import VolumeError, open_volume, parse_volume_spec

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

    from ..models import ModelFileError, bundled_model_path, load_model
    from ..models.weights import resolve_device

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


def _default_threshold() -> float:
    from ..segmentation import DEFAULT_THRESHOLD

    return DEFAULT_THRESHOLD


def _store_attrs(volume, size_from: str, model_info: dict, device: str, augment) -> dict:
    """Return the store attributes saying what was segmented, how and with which model."""
    views = DEFAULT_AUGMENT if augment is None else int(augment)
    return {
        "voxel_size_from": size_from,
        "model": {**model_info, "augment": views},
        "device": device,
        "input": volume.source,
        "input_shape": list(volume.shape),
        "input_dtype": str(volume.dtype),
    }


def _describe_sections(sections: dict) -> str:
    """One line on what the section correction found."""
    if not sections.get("corrected"):
        return sections.get("note") or "not checked"
    missing = sections.get("missing") or []
    shifted = sections.get("shifted") or []
    return f"missing {list(missing) or 'none'}, shifted {list(shifted) or 'none'} (corrected)"


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment an EM volume and write the segmentation state to a zarr store."""
    import time

    from ..io import (
        OutputExistsError,
        VolumeError,
        check_output_path,
        parse_volume_spec,
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
        args.threshold = _default_threshold()
    if not math.isfinite(args.threshold):
        raise CommandError(f"--threshold must be a number; got {args.threshold}")
    if args.synapses:
        if args.blockwise:
            raise CommandError("--synapses does not work with --blockwise yet; run without it")
        check_synapse_arguments(args)
    synapse_summary = None
    if args.blockwise:
        return _cmd_blockwise(args, output, start)
    if args.block_size or args.scheduler or args.workers:
        raise CommandError("--block-size, --scheduler and --workers need --blockwise")
    progress = ProgressLine()
    try:
        volume = _segment_input(args.input)
        voxel_size, size_from = _segment_voxel_size(args.voxel_size, volume)
        model, model_info, device = _segment_model(args.model, args.device)
        from ..segmentation import save_result, segment_volume

        try:
            result = segment_volume(
                volume.data,
                voxel_size,
                model=model,
                device=device,
                threshold=args.threshold,
                section_correction=args.section_correction,
                augment=args.augment,
                progress=lambda f, m: m == "done" or progress(0.9 * f, m),
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        save_result(
            result,
            output,
            attrs=_store_attrs(volume, size_from, model_info, device, args.augment),
            overwrite=args.overwrite,
            progress=lambda f, m: progress(0.9 + 0.1 * f, m),
        )
        if args.synapses:
            synapse_summary = run_synapse_detection(
                args, output, volume.data, voxel_size, progress
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
    if synapse_summary is not None:
        print(f"  synapses      {synapse_summary}")
    print(f"  sections      {_describe_sections(result.sections)}")
    print(
        f"  arrays        boundaries uint8 (p = value / 255), fragments {dtypes['fragments']}, "
        f"segmentation {dtypes['segmentation']}; region_graph ({result.graph.n_edges} edges), "
        f"merge_tree ({len(result.tree)} merges)"
    )
    return 0


def _cmd_blockwise(args: argparse.Namespace, output: Path, start: float) -> int:
    """``segment --blockwise``: every check before any work, then the dask run."""
    import time

    from ..blockwise import BlockwiseError, check_scheduler, segment_blockwise
    from ..io import VolumeError

    scheduler = args.scheduler or "processes"
    workers = 2 if args.workers is None else args.workers
    if workers < 1:
        raise CommandError(f"--workers must be at least 1; got {workers}")
    try:
        scheduler = check_scheduler(scheduler)
    except BlockwiseError as error:
        raise CommandError(str(error)) from None
    if scheduler.startswith("tcp://") and args.workers is not None:
        print(
            f"note: --workers is for local clusters; the cluster at {scheduler} "
            "uses the workers started for it",
            file=sys.stderr,
        )
    volume = _segment_input(args.input)
    voxel_size, size_from = _segment_voxel_size(args.voxel_size, volume)
    (_, config), model_info, device = _segment_model(args.model, args.device)
    progress = ProgressLine()
    try:
        result = segment_blockwise(
            args.input,
            output,
            voxel_size=voxel_size,
            model=args.model,
            model_config=config,
            model_sha256=model_info["sha256"],
            device=device,
            threshold=args.threshold,
            augment=args.augment,
            block_size=args.block_size,
            scheduler=scheduler,
            workers=workers,
            overwrite=args.overwrite,
            attrs=_store_attrs(volume, size_from, model_info, device, args.augment),
            progress=progress,
        )
    except KeyboardInterrupt:
        progress.close()
        print(
            "napari-connectome segment: cancelled; finished blocks are kept, "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    except (BlockwiseError, VolumeError, ValueError, OSError) as error:
        raise CommandError(str(error)) from error
    finally:
        progress.close()
    graph, tree = result["graph"], result["tree"]
    n_segments = int(tree.table(result["threshold"]).max(initial=0))
    sizes = " x ".join(f"{v:g}" for v in voxel_size)
    blocks = " x ".join(str(b) for b in result["block_size"])
    halo = " x ".join(str(h) for h in result["halo"])
    for note in result["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {output} in {time.perf_counter() - start:.1f} s (blockwise)")
    print(f"  input         {volume.source}  {volume.shape} {volume.dtype}")
    print(f"  voxel size    {sizes} nm (from {size_from})")
    print(f"  model         {model_info['name']} on {device}")
    print(
        f"  blocks        {result['blocks']} of {blocks} (halo {halo}), "
        f"{result['blocks_resumed']} resumed; scheduler {scheduler}"
    )
    print(f"  fragments     {tree.n_fragments}")
    print(f"  segments      {n_segments} at threshold {result['threshold']:g}")
    print(f"  region graph  {graph.n_edges} edges, merge tree {len(tree)} merges")
    return 0


def add_parser(sub) -> None:
    """Add the ``segment`` subcommand to the subparsers ``sub``."""
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
        f"(default {_default_threshold():g})",
    )
    segment.add_argument(
        "--augment",
        type=int,
        choices=AUGMENT_CHOICES,
        default=None,
        help="test-time views averaged per tile: 1 (the plain network, fastest), 2, 4 "
        "(mirrors; the default) or 8 (mirrors and 90-degree rotations)",
    )
    segment.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    add_synapse_arguments(segment)
    segment.add_argument(
        "--no-section-correction",
        dest="section_correction",
        action="store_false",
        help="do not detect and bridge missing sections or re-align shifted sections of "
        "serial-section (anisotropic) stacks; on by default",
    )
    segment.add_argument(
        "--blockwise",
        action="store_true",
        help="work block by block on a dask cluster (volumes larger than memory); "
        "a rerun resumes from the finished blocks",
    )
    segment.add_argument(
        "--block-size",
        type=int,
        nargs="+",
        metavar="N",
        help="with --blockwise: block size Z Y X in voxels (default 32 1024 1024 for "
        "anisotropic stacks, 128 256 256 otherwise); at least the model's context",
    )
    segment.add_argument(
        "--scheduler",
        default=None,
        help="with --blockwise: 'processes' (default: a local cluster), 'threads', "
        "or the address tcp://HOST:PORT of a running dask scheduler",
    )
    segment.add_argument(
        "--workers",
        type=int,
        default=None,
        help="with --blockwise: workers of the local cluster (default 2)",
    )
    segment.set_defaults(func=cmd_segment)
