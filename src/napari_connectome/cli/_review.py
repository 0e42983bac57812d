"""``napari-connectome review``: the ranked review queue, and a simulated proofreader."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import VOLUME_HELP, CommandError

_NO_GRAPH = (
    "{path} has no region graph to build review candidates from: run "
    "`napari-connectome segment RAW {path}` first to make one"
)


def _open_state(store: Path):
    """Return the store and its proofreading state (its journal's edits applied)."""
    from ..io import VolumeError, read_segmentation_store
    from ..io.journal import JournalError, journal_path, replay, state_from_store

    if not store.exists():
        raise CommandError(f"no such segmentation store: {store}")
    try:
        stored = read_segmentation_store(store)
    except VolumeError as error:
        text = str(error)
        if "region_graph" in text or "merge_tree" in text or "not a" in text:
            raise CommandError(_NO_GRAPH.format(path=store) + f" ({text})") from error
        raise CommandError(text) from error
    state = state_from_store(stored)
    path = journal_path(stored.path)
    if path.exists() and path.stat().st_size > 0:
        try:
            replay(state, path)
        except JournalError as error:
            raise CommandError(str(error)) from error
    return stored, state


def _read_truth(spec: str, key: str | None, shape) -> object:
    from ..io import VolumeError, read_array

    if key:
        spec = f"{spec}:{key}"
    try:
        truth = read_array(spec)
    except VolumeError as error:
        raise CommandError(f"cannot read the ground truth {spec}: {error}") from error
    if truth.dtype.kind not in "uib":
        raise CommandError(
            f"the ground truth {spec} holds {truth.dtype} values; it must be integer labels"
        )
    if tuple(truth.shape) != tuple(shape):
        raise CommandError(
            f"the ground truth {spec} has shape {tuple(truth.shape)} but the segmentation has "
            f"{tuple(shape)}: pass the truth of the same volume (crop it to the segmented region)"
        )
    return truth


def _print_curve(out: dict) -> None:
    print(f"{'decisions':>9}  {'VOI split':>9}  {'VOI merge':>9}  {'VOI':>7}  {'ad. Rand':>8}")
    for p in out["curve"]:
        print(
            f"{p['decisions']:>9}  {p['voi_split']:>9.4f}  {p['voi_merge']:>9.4f}  "
            f"{p['voi']:>7.4f}  {p['arand']:>8.4f}"
        )
    f, floor = out["final"], out["floor"]
    left = "queue exhausted" if f["queue_exhausted"] else "budget reached"
    print(
        f"{out['queue_length']} candidates at the start; {f['decisions']} decisions "
        f"({f['accepted']} accepted, {f['rejected']} rejected), {left}"
    )
    print(f"fragment-level floor: VOI {floor['voi']:.4f}, adapted Rand {floor['arand']:.4f}")


def cmd_review(args: argparse.Namespace) -> int:
    """Print the review queue of a store, or simulate a proofreader answering it."""
    from ..core.review_candidates import CandidateConfig
    from ..core.review_queue import ReviewQueue
    from ..core.review_simulation import simulate_review

    if args.budget is not None and args.budget < 0:
        raise CommandError(f"--budget must be 0 or more; got {args.budget}")
    if args.every < 1:
        raise CommandError(f"--every must be 1 or more; got {args.every}")
    stored, state = _open_state(Path(args.store).expanduser())
    config = CandidateConfig(threshold=stored.threshold)
    if args.simulate is None:
        queue = ReviewQueue(state, ranking=args.ranking, seed=args.seed, config=config)
        top = queue.pending()[: args.budget if args.budget is not None else 20]
        if args.json:
            print(json.dumps({"queue_length": len(queue), "top": [c.to_dict() for c in top]}))
            return 0
        print(f"{len(queue)} candidates; the first {len(top)} ({args.ranking} order):")
        print(f"{'kind':<6} {'segments':<16} {'score':>10}  {'P(wrong)':>8}  location")
        for c in top:
            segs = "+".join(map(str, c.segments))
            loc = ",".join(map(str, c.location))
            print(f"{c.kind:<6} {segs:<16} {queue.scores[c.id]:>10.1f}  {c.prior:>8.2f}  {loc}")
        return 0
    truth = _read_truth(args.simulate, args.key, state.fragments.shape)
    out = simulate_review(
        state,
        truth,
        ranking=args.ranking,
        seed=args.seed,
        budget=args.budget,
        every=args.every,
        config=config,
    )
    if args.json:
        final = dict(out["final"], floor=out["floor"])
        print(
            json.dumps(
                {"curve": out["curve"], "queue_length": out["queue_length"], "final": final}
            )
        )
        return 0
    _print_curve(out)
    return 0


def add_parser(sub) -> None:
    """Add the ``review`` subcommand to the subparsers ``sub``."""
    p = sub.add_parser(
        "review",
        help="the ranked review queue of a segmentation store; a simulated proofreader",
        description=(
            "List the candidate errors of OUTPUT.zarr (false splits with a suggested merge, "
            "false merges with a suggested split), best first; with --simulate GROUND_TRUTH a "
            "simulated proofreader answers them in order (accepting a fix when it lowers the "
            "VOI against the truth) and the VOI and adapted Rand are printed every K decisions. "
            "The store itself is not changed."
        ),
    )
    p.add_argument("store", help="the segmentation store (OUTPUT.zarr from `segment`)")
    p.add_argument("--simulate", metavar="GROUND_TRUTH", help=VOLUME_HELP + " (label 0 ignored)")
    p.add_argument("--key", help="array of the ground truth inside a .npz/.h5/zarr file")
    p.add_argument(
        "--budget", type=int, metavar="N", help="most decisions (simulation) or rows listed"
    )
    p.add_argument(
        "--ranking",
        choices=("learned", "static", "random"),
        default="learned",
        help="queue order (default learned)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random order")
    p.add_argument("--every", type=int, default=10, metavar="K", help="curve point every K")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_review)
