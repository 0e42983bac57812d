"""Benchmark synapse detection: accuracy, partner accuracy, throughput, table updates.

Measures, with the synapse model (bundled by default):

- detection precision, recall and F1 (one-to-one matching within 200 nm) on the
  held-out sections the model never trained on: ISBI 2012 z 20-29 and VNC
  stack 1 z 15-19, at the fixed detection defaults, plus a threshold sweep
  (reported, never used to pick the default). The truth synapses of both are
  the 3D face-connected components of the annotation: VNC's is a 0/1 mask, and
  ISBI's 8-bit ids cut one synaptic region into touching pieces (cleft membrane
  and cytoplasm on each side, 84 ids in 25 regions), so ISBI is also scored
  with the ids as objects, for reference; and both pooled (matches, detections
  and truth summed, as the phantoms are pooled);
- the same on four phantoms of seeds never used in training or tuning (two
  serial-section ones and two FIB-SEM-like ones, large enough to hold 10-60
  synapses each), and partner accuracy on them (the phantom knows every
  presynaptic and postsynaptic neuron), with the phantom's true neurons as the
  segmentation, so that only partner assignment is scored; the pooled phantom
  F1 and partner accuracy (all phantom synapses together);
- throughput (megavoxels/s) of the model and of object extraction + partner
  assignment, on the CPU with ``--threads`` torch threads;
- the time to update the synapse table and the connectome after a merge and
  after a split (no model run), against re-deriving partners from scratch
  (probes included) in the same run; on the phantom and on a table scaled to
  10 000 synapses (a merge as ``SynapseTable.update`` does it, and as the
  Synapses dock does it after an edit without a box: every probe re-read).

Prints Markdown tables; ``--json`` prints one JSON object with the same figures.

Usage::

    python benchmarks/synapses.py [--data-dir ../shared/data] [--model bundled|PATH]
                                  [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
REAL = (
    ("ISBI 2012 z 20-29", "isbi2012_cardona_3d.npz", (50.0, 4.0, 4.0), slice(20, 30)),
    ("VNC stack 1 z 15-19", "drosophila_vnc_stack1.npz", (50.0, 4.6, 4.6), slice(15, 20)),
)
PHANTOMS = (
    ("phantom ssTEM 40x4x4 (seed 20000)", (32, 768, 768), (40.0, 4.0, 4.0), 20000),
    ("phantom FIB-SEM 8 nm (seed 20001)", (160, 160, 160), (8.0, 8.0, 8.0), 20001),
    ("phantom ssTEM 40x4x4 (seed 20002)", (32, 768, 768), (40.0, 4.0, 4.0), 20002),
    ("phantom FIB-SEM 8 nm (seed 20003)", (160, 160, 160), (8.0, 8.0, 8.0), 20003),
)
SWEEP = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
TARGETS = {"phantom_f1": 0.9, "real_f1": 0.75, "partner_accuracy": 0.9, "update_ms": 100.0}


def log(message: str) -> None:
    print(f"[synapse benchmark] {message}", file=sys.stderr, flush=True)


def median_ms(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def predict(raw, voxel, model):
    from napari_connectome.models.synapse_inference import predict_synapse_maps

    start = time.perf_counter()
    maps = predict_synapse_maps(raw, voxel, model, device="cpu")
    return maps, time.perf_counter() - start


def detection_block(syn, voxel, truth) -> dict:
    from napari_connectome.core.synapse_metrics import detection_scores
    from napari_connectome.core.synapses import detect_synapses
    from napari_connectome.synapse_detection import DETECTION_DEFAULTS

    start = time.perf_counter()
    found = detect_synapses(syn, voxel, **DETECTION_DEFAULTS)
    seconds = time.perf_counter() - start
    scores = detection_scores(found, truth, voxel)
    sweep = {}
    for t in SWEEP:  # the low threshold; the peak threshold stays (or rises to t)
        settings = {**DETECTION_DEFAULTS, "threshold": t}
        sweep[str(t)] = detection_scores(detect_synapses(syn, voxel, **settings), truth, voxel)[
            "f1"
        ]
    return {"detection": scores, "sweep_f1": sweep, "objects_seconds": seconds, "found": found}


def real_sets(data_dir: Path, model) -> list[dict]:
    from napari_connectome.core.synapse_metrics import detection_scores, synapse_regions

    out = []
    for name, file, voxel, held in REAL:
        path = data_dir / file
        if not path.is_file():
            log(f"skipping {name}: {path} not found")
            continue
        with np.load(path) as archive:
            raw = np.asarray(archive["raw"][held])
            ids = np.asarray(archive["synapses"][held])
        truth = synapse_regions(ids)
        log(f"{name}: predicting {raw.shape}")
        maps, seconds = predict(raw, voxel, model)
        block = detection_block(maps.synapse, voxel, truth)
        extra = {}
        if not set(np.unique(ids).tolist()) <= {0, 1, 227, 254, 255}:  # ISBI's ids
            extra["detection_ids_as_objects"] = detection_scores(block["found"], ids, voxel)
        block.pop("found")
        out.append(
            {
                "name": name,
                "shape": list(raw.shape),
                "voxel_size": list(voxel),
                "predict_seconds": seconds,
                "mvox_per_s": raw.size / 1e6 / seconds,
                **block,
                **extra,
            }
        )
    return out


def phantom_sets(model) -> tuple[list[dict], dict]:
    from napari_connectome.core.synapse_metrics import partner_accuracy, truth_partner_rows
    from napari_connectome.core.synapses import assign_partners
    from napari_connectome.synthetic import make_phantom

    out, kept = [], {}
    for name, shape, voxel, seed in PHANTOMS:
        log(f"{name}: making and predicting {shape}")
        ph = make_phantom(shape=shape, voxel_size=voxel, seed=seed, synapse_density=10.0)
        maps, seconds = predict(ph.raw, voxel, model)
        block = detection_block(maps.synapse, voxel, ph.synapses)
        found = block.pop("found")
        start = time.perf_counter()
        table = assign_partners(
            found, ph.neurons, maps.presynaptic, maps.postsynaptic, synapse=maps.synapse
        )
        assign_seconds = time.perf_counter() - start
        truth_rows = truth_partner_rows(ph.synapse_table, voxel)
        partners = partner_accuracy(table, truth_rows)
        out.append(
            {
                "name": name,
                "shape": list(shape),
                "voxel_size": list(voxel),
                "predict_seconds": seconds,
                "mvox_per_s": ph.raw.size / 1e6 / seconds,
                "assign_seconds": assign_seconds,
                "partners": partners,
                **block,
            }
        )
        if name == PHANTOMS[0][0]:  # the update timings use the first one
            kept[name] = (found, table, ph, maps)
    return out, kept


def scaled_table(table, copies: int):
    """Repeat the phantom's table ``copies`` times with distinct fragment ids."""
    from dataclasses import replace

    from napari_connectome.core.synapses import PartnerProbes

    n, p = len(table), table.probes
    m = len(p.synapse)
    top = int(table.probe_fragments.max()) + 1
    probes = PartnerProbes(
        synapse=np.concatenate([p.synapse + k * n for k in range(copies)]),
        coords=np.concatenate([p.coords] * copies),
        contact=np.concatenate([p.contact] * copies),
        pre=np.concatenate([p.pre] * copies),
        facing_from=np.concatenate(
            [np.where(p.facing() >= 0, p.facing() + k * m, -1) for k in range(copies)]
        ),
    )
    frags = np.concatenate([table.probe_fragments + k * top for k in range(copies)])
    big = replace(
        table,
        ids=np.arange(1, n * copies + 1, dtype=np.uint32),
        positions=np.concatenate([table.positions] * copies),
        confidence=np.concatenate([table.confidence] * copies),
        volumes_nm3=np.concatenate([table.volumes_nm3] * copies),
        probes=probes,
        probe_fragments=frags,
        segment_table=np.arange(top * copies, dtype=np.uint64),
    )
    big.derive()
    return big


def update_timings(kept) -> dict:
    from napari_connectome.core.connectome import connectome_edges
    from napari_connectome.core.synapses import SynapseTable, assign_partners

    name = PHANTOMS[0][0]
    found, table, ph, maps = kept[name]
    if not len(table):
        return {}
    neurons = ph.neurons
    top = int(neurons.max())
    ident = np.arange(top + 2, dtype=np.uint64)
    t = SynapseTable.from_probes(found, table.probes, neurons, ident)
    a, b = int(t.pre[0]), int(t.pairs[0, 1]) if len(t.pairs) else 1
    merged = ident.copy()
    merged[merged == b] = a

    def merge():
        t.update(merged)
        connectome_edges(t)

    split_frag = neurons.copy()
    box = ndi.find_objects((neurons == a).astype(np.uint8))[0]
    half = tuple(
        slice(s.start, (s.start + s.stop) // 2) if i == 2 else s for i, s in enumerate(box)
    )
    split_frag[half][neurons[half] == a] = top + 1
    split_table = ident.copy()

    def split():
        t.update(split_table, fragments=split_frag, box=half)
        connectome_edges(t)

    def scratch():
        fresh = assign_partners(
            found,
            split_frag,
            maps.presynaptic,
            maps.postsynaptic,
            synapse=maps.synapse,
            table=split_table,
        )
        connectome_edges(fresh)

    out = {
        "synapses": len(t),
        "probes": len(t.probes.synapse),
        "merge_ms": median_ms(merge),
        "split_ms": median_ms(split),
        "from_scratch_ms": median_ms(scratch, 3),
    }
    copies = max(1, int(np.ceil(10_000 / max(1, len(t)))))
    big = scaled_table(t, copies)
    big_merge = big.segment_table.copy()
    big_merge[big_merge == b] = a

    def big_update():
        big.update(big_merge)
        connectome_edges(big)

    def big_dock_update():  # the dock re-reads every probe after an edit without a box
        big.set_probe_fragments(big.probe_fragments.copy())
        big.update(big_merge)
        connectome_edges(big)

    out.update(
        {
            "scaled_synapses": len(big),
            "scaled_probes": len(big.probes.synapse),
            "scaled_merge_ms": median_ms(big_update),
            "scaled_dock_merge_ms": median_ms(big_dock_update),
        }
    )
    return out


def pooled_detection(items: list[dict]) -> dict:
    """Score the synapses of several volumes together (one to one matches summed)."""
    tp = sum(p["detection"]["tp"] for p in items)
    found = sum(p["detection"]["n_found"] for p in items)
    truth = sum(p["detection"]["n_truth"] for p in items)
    precision = tp / found if found else 0.0
    recall = tp / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n_truth": truth,
        "n_found": found,
        "tp": tp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
    }


def pooled(phantoms: list[dict]) -> dict:
    """Score all phantom synapses together (detection and partners)."""
    from napari_connectome.core.synapse_metrics import pooled_partner_accuracy

    partners = pooled_partner_accuracy(p["partners"] for p in phantoms)
    return {
        **pooled_detection(phantoms),
        "partner_accuracy": partners["accuracy"],
        "pre_accuracy": partners["pre_accuracy"],
        "partner_matched": partners["matched"],
    }


def run(args) -> dict:
    import torch

    from napari_connectome.models.synapse_inference import load_synapse_model
    from napari_connectome.synapse_detection import DETECTION_DEFAULTS

    torch.set_num_threads(args.threads)
    model = load_synapse_model(None if args.model == "bundled" else args.model)
    real = real_sets(Path(args.data_dir), model)
    phantoms, kept = phantom_sets(model)
    updates = update_timings(kept)
    return {
        "phantom_pooled": pooled(phantoms),
        "real_pooled": pooled_detection(real),
        "model": args.model,
        "detection_defaults": DETECTION_DEFAULTS,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "real": real,
        "phantoms": phantoms,
        "updates": updates,
        "targets": TARGETS,
    }


def _row(item: dict) -> str:
    """One volume's row of the detection table."""
    d = item["detection"]
    p = item.get("partners")
    partner = "n/a (no partner truth)"
    if p:
        partner = (
            f"{p['accuracy']:.3f} ({p['pre_accuracy']:.3f} / "
            f"{p['post_precision']:.3f} / {p['post_recall']:.3f}), {p['matched']} TP"
        )
    return (
        f"| {item['name']} | {d['n_truth']} | {d['n_found']} | {d['tp']} | "
        f"{d['precision']:.3f} | {d['recall']:.3f} | {d['f1']:.3f} | {partner} | "
        f"{item['mvox_per_s']:.2f} |"
    )


def _pooled_row(name: str, d: dict, partners: str) -> str:
    """Return a pooled row of the detection table (no throughput of its own)."""
    return (
        f"| {name} | {d['n_truth']} | {d['n_found']} | {d['tp']} | {d['precision']:.3f} | "
        f"{d['recall']:.3f} | {d['f1']:.3f} | {partners} | |"
    )


def markdown(res: dict) -> str:
    lines = [
        f"Synapse model `{res['model']}`, CPU, {res['threads']} torch threads; detection "
        f"defaults {res['detection_defaults']}; matching within 200 nm.",
        "",
        "| volume | truth | found | TP | precision | recall | F1 | partner accuracy "
        "(pre / post P / post R) | model Mvox/s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    lines += [_row(item) for item in res["real"]]
    if res["real"]:
        lines.append(_pooled_row("real sections pooled", res["real_pooled"], ""))
    lines += [_row(item) for item in res["phantoms"]]
    q = res["phantom_pooled"]
    partners = (
        f"{q['partner_accuracy']:.3f} (pre {q['pre_accuracy']:.3f}), {q['partner_matched']} TP"
    )
    lines.append(_pooled_row("all phantoms pooled", q, partners))
    for item in res["real"]:
        d = item.get("detection_ids_as_objects")
        if d:
            lines += [
                "",
                f"{item['name']} with its {d['n_truth']} 8-bit ids as objects (pieces of "
                f"{item['detection']['n_truth']} regions): precision {d['precision']:.3f}, "
                f"recall {d['recall']:.3f}, F1 {d['f1']:.3f}.",
            ]
    lines += [
        "",
        "Sweep of the (low) threshold (F1; reported only, the default is fixed):",
        "",
        "| volume | " + " | ".join(f"t={t}" for t in SWEEP) + " |",
        "|---|" + "---:|" * len(SWEEP),
    ]
    for item in [*res["real"], *res["phantoms"]]:
        lines.append(
            f"| {item['name']} | "
            + " | ".join(f"{item['sweep_f1'][str(t)]:.3f}" for t in SWEEP)
            + " |"
        )
    u = res["updates"]
    if u:
        lines += [
            "",
            "Synapse table + connectome update after proofreading (median, no model run):",
            "",
            "| table | synapses | probes | merge (ms) | split (ms) | from scratch (ms) |",
            "|---|---:|---:|---:|---:|---:|",
            f"| phantom | {u['synapses']} | {u['probes']} | {u['merge_ms']:.2f} | "
            f"{u['split_ms']:.2f} | {u['from_scratch_ms']:.1f} |",
            f"| scaled | {u['scaled_synapses']} | {u['scaled_probes']} | "
            f"{u['scaled_merge_ms']:.2f} | | |",
            f"| scaled, dock (every probe re-read) | {u['scaled_synapses']} | "
            f"{u['scaled_probes']} | {u['scaled_dock_merge_ms']:.2f} | | |",
        ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    res = run(args)
    print(json.dumps(res, default=float) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
