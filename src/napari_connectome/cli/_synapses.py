"""``segment --synapses``: detect synapses and add them to the segmentation store."""

from __future__ import annotations

import math

from ._common import CommandError


def add_synapse_arguments(parser) -> None:
    """Add ``--synapses`` and its options to the ``segment`` parser.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``segment`` subcommand's parser.
    """
    from ..core.synapses import DETECTION_DEFAULTS, SECTION_NM

    low, peak = DETECTION_DEFAULTS["threshold"], DETECTION_DEFAULTS["peak_threshold"]
    group = parser.add_argument_group("synapses")
    group.add_argument(
        "--synapses",
        action="store_true",
        help="also detect synapses and their partners; adds the 'synapses' id array and "
        "the synapse table to OUTPUT.zarr",
    )
    group.add_argument(
        "--synapse-model",
        default="bundled",
        help="'bundled' (default) or a synapse weights file",
    )
    group.add_argument(
        "--synapse-threshold",
        type=float,
        default=None,
        help=(
            f"synapse probability threshold (default {low:g}; an object must also reach "
            f"{peak:g} somewhere; chosen for the bundled model)"
        ),
    )
    group.add_argument(
        "--synapse-peak-threshold",
        type=float,
        default=None,
        help=(
            f"probability an object must reach somewhere to be kept (default {peak:g}; "
            "lower it when clear synapses are missed)"
        ),
    )
    group.add_argument(
        "--synapse-min-size",
        type=float,
        default=None,
        metavar="NM3",
        help=(
            f"smallest synapse kept, in nm^3 (default {DETECTION_DEFAULTS['min_size_nm3']:g};"
            f" a 2D image counts as one {SECTION_NM:g} nm section)"
        ),
    )


def check_synapse_arguments(args) -> None:
    """Refuse bad synapse options before any work.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``segment`` arguments.

    Raises
    ------
    CommandError
        For a threshold outside (0, 1), a peak threshold outside (0, 1], a negative
        size floor or a missing model file.
    """
    from pathlib import Path

    from ..models.synapse_inference import bundled_synapse_model_path

    t = getattr(args, "synapse_threshold", None)
    if t is not None and not (math.isfinite(t) and 0 < t < 1):
        raise CommandError(f"--synapse-threshold must be between 0 and 1; got {t}")
    peak = getattr(args, "synapse_peak_threshold", None)
    if peak is not None and not (math.isfinite(peak) and 0 < peak <= 1):
        raise CommandError(f"--synapse-peak-threshold must be in (0, 1]; got {peak}")
    s = getattr(args, "synapse_min_size", None)
    if s is not None and not (math.isfinite(s) and s >= 0):
        raise CommandError(f"--synapse-min-size must be >= 0 (nm^3); got {s}")
    name = getattr(args, "synapse_model", "bundled")
    path = bundled_synapse_model_path() if name == "bundled" else Path(name).expanduser()
    if not path.is_file() and name == "bundled":
        raise CommandError(
            f"the bundled synapse model is not installed (expected {path}); pass "
            "--synapse-model PATH"
        )
    if not path.is_file():
        raise CommandError(
            f"no such synapse model file: {path}; pass --synapse-model PATH or train one "
            "with 'napari-connectome train --target synapses'"
        )


def run_synapse_detection(args, store_path, raw, voxel_size, report) -> str:
    """Detect synapses in ``raw`` and write them into the store at ``store_path``.

    Partners are read from the store's fragments and its fragment-to-segment
    table, so they follow later proofreading (``export --connectome``).

    Parameters
    ----------
    args : argparse.Namespace
        ``synapse_model``, ``synapse_threshold``, ``synapse_peak_threshold``,
        ``synapse_min_size``, ``device``.
    store_path : str or pathlib.Path
        The segmentation store just written.
    raw : array-like
        The EM volume.
    voxel_size : tuple of float
        Voxel size in nm.
    report : callable
        ``report(fraction, message)``.

    Returns
    -------
    str
        A one-line summary for the command's output.

    Raises
    ------
    CommandError
        For an unusable synapse model or bad input.
    """
    import numpy as np

    from ..core.connectome import connectome_edges
    from ..core.synapses import partner_defaults
    from ..io import read_segmentation_store
    from ..io.synapse_store import write_synapse_store
    from ..models import ModelFileError
    from ..synapse_detection import counted, detect_volume, synapse_count

    check_synapse_arguments(args)
    try:
        from ..models.synapse_inference import load_synapse_model

        model = load_synapse_model(args.synapse_model, device="cpu")
    except (ModelFileError, ValueError) as error:
        raise CommandError(str(error)) from error
    stored = read_segmentation_store(store_path)
    fragments = np.asarray(stored.fragments[...])
    table = stored.table_at(stored.threshold)
    try:
        result = detect_volume(
            raw,
            voxel_size,
            segmentation=fragments,
            fragment_table=table,
            model=model,
            device=getattr(args, "device", "auto"),
            threshold=args.synapse_threshold,
            peak_threshold=getattr(args, "synapse_peak_threshold", None),
            min_size_nm3=args.synapse_min_size,
            progress=report,
        )
    except ValueError as error:
        raise CommandError(str(error)) from error
    name = "bundled" if args.synapse_model == "bundled" else str(args.synapse_model)
    attrs = {"model": {**result.model, "name": name}, "settings": result.settings}
    if result.table is not None:  # SynapseResult.assign uses the default rule
        attrs["partner_rule"] = partner_defaults()
    write_synapse_store(store_path, result.detections, result.table, attrs=attrs)
    if not len(result):
        from ..synapse_detection import no_synapses_message

        return no_synapses_message(result) + " (an empty synapse table was written)"
    edges = connectome_edges(result.table)
    return (
        f"{synapse_count(len(result))}, {counted(len(result.table.pairs), 'pre->post pair')}, "
        f"{counted(len(edges), 'connectome edge')}"
    )


__all__ = ["add_synapse_arguments", "check_synapse_arguments", "run_synapse_detection"]
