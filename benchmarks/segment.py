"""Benchmark the one-click segmentation: speed, memory and accuracy on real EM volumes.

Measures, with the boundary model (bundled by default):

- inference throughput (megavoxels/s) on a 16 x 512 x 512 ISBI crop, on the CPU
  with ``--threads`` torch threads (the default views and one view), and on CUDA;
- fragments + region graph + agglomeration throughput on the predicted
  boundaries of the whole ISBI volume (30 x 512 x 512);
- the threshold slider (``table_at`` + ``apply_table``) on that volume;
- the peak memory of a whole-volume ``segment_volume`` run (fresh subprocesses:
  ``ru_maxrss`` for the real peak, ``tracemalloc`` for numpy allocations) against
  the bytes of the input and the outputs;
- accuracy (VOI split / merge, adapted Rand) on the held-out sections of every
  real volume with truth, at the fixed ``DEFAULT_THRESHOLD`` and over a small
  threshold sweep (reported, never used to pick the default), for the model and
  for a no-model baseline (the same fragments and agglomeration on the smoothed,
  inverted raw image).

Prints Markdown tables; ``--json`` prints one JSON object with the same figures.

Usage: ``segment.py [--data-dir DIR] [--model bundled|PATH] [--threads 2] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from _shared import truth_2d_from_membranes

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
ISBI = ("isbi2012_cardona_3d.npz", (50.0, 4.0, 4.0))
GALA = ("gala_fib_train.npz", (10.0, 10.0, 10.0))
VNC = ("drosophila_vnc_stack1.npz", (50.0, 4.6, 4.6))
INFERENCE_CROP = (16, 512, 512)
SWEEP = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
MEMORY_TARGET = 4.0
METRICS = ("voi_split", "voi_merge", "voi", "arand")


def log(message: str) -> None:
    print(f"[segment benchmark] {message}", file=sys.stderr, flush=True)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ------------------------------------------------------------------ model
def tiny_model_file(folder: Path) -> Path:
    """Save a tiny random network with a varying output, to run the script without weights."""
    import torch

    from napari_connectome.models import build_model, default_config, save_model

    torch.manual_seed(0)
    config = default_config(base_channels=4, depth=2)
    model = build_model(config).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    rng = np.random.default_rng(0)
    image = ndi.gaussian_filter(rng.random((128, 128)), 2).astype(np.float32)
    with torch.no_grad():
        model(torch.from_numpy((image - image.mean()) / image.std())[None, None])
        model.head.weight.mul_(10)
    return save_model(model.eval(), config, folder / "tiny_random.safetensors")


def resolve_model(name: str, folder: Path) -> tuple[str, str | None]:
    """Return the weights path to use and a loud note when it is a stand-in."""
    from napari_connectome.models import bundled_model_path

    if name != "bundled":
        return str(Path(name).resolve()), None
    if bundled_model_path().exists():
        return str(bundled_model_path()), None
    note = (
        "THE BUNDLED MODEL IS NOT INSTALLED: a tiny RANDOM model (base_channels=4, depth=2) "
        "was used instead. Speeds of the real model differ and ACCURACY FIGURES ARE "
        "MEANINGLESS; rerun once models/weights/boundary_unet.safetensors exists."
    )
    return str(tiny_model_file(folder)), note


# ------------------------------------------------------------------ inference
def predict(raw, voxel, model, device="cpu", **kw):
    from napari_connectome.models import predict_boundaries

    return predict_boundaries(raw, voxel, model, device=device, **kw)


def inference(isbi_raw, voxel, model_path) -> tuple[dict, np.ndarray]:
    import torch

    from napari_connectome.models import load_model

    crop = isbi_raw[: INFERENCE_CROP[0], : INFERENCE_CROP[1], : INFERENCE_CROP[2]]
    mvox = crop.size / 1e6
    results = {"crop": list(crop.shape)}
    model = load_model(model_path, device="cpu")
    predict(crop[:1, :256, :256], voxel, model)  # warm-up
    pred, seconds = timed(predict, crop, voxel, model)
    results["cpu"] = {
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "mvox_per_s": mvox / seconds,
    }
    _, plain = timed(predict, crop, voxel, model, augment=1)  # baseline: no test-time views
    results["cpu_plain"] = {"seconds": plain, "mvox_per_s": mvox / plain}
    log(f"inference on CPU: {mvox / seconds:.2f} Mvox/s ({mvox / plain:.2f} without views)")
    if torch.cuda.is_available():
        gpu = load_model(model_path, device="cuda")
        predict(crop[:2], voxel, gpu, "cuda")  # warm-up
        torch.cuda.synchronize()
        _, seconds = timed(predict, crop, voxel, gpu, "cuda")
        results["cuda"] = {
            "device": torch.cuda.get_device_name(0),
            "seconds": seconds,
            "mvox_per_s": mvox / seconds,
        }
    else:
        results["cuda"] = "no GPU"
    # sections are predicted independently (xy planes only): predict the rest of the volume
    rest = predict(isbi_raw[INFERENCE_CROP[0] :], voxel, model)
    full = np.concatenate([pred, rest]) if crop.shape[1:] == isbi_raw.shape[1:] else None
    if full is None:
        full = predict(isbi_raw, voxel, model)
    return results, full


# ------------------------------------------------------------------ stages and slider
def stages(boundaries, voxel) -> tuple[dict, list]:
    from napari_connectome.core.agglomeration import agglomerate, apply_table, segment_table
    from napari_connectome.core.fragments import make_fragments
    from napari_connectome.core.region_graph import build_region_graph

    mvox = boundaries.size / 1e6
    frags, t_frag = timed(make_fragments, boundaries, voxel)
    n = int(frags.max())
    graph, t_graph = timed(build_region_graph, frags, boundaries, voxel, n_fragments=n)
    tree, t_agg = timed(agglomerate, graph)
    total = t_frag + t_graph + t_agg
    out = {
        "shape": list(boundaries.shape),
        "n_fragments": n,
        "n_edges": graph.n_edges,
        "n_merges": len(tree),
    }
    for key, seconds in (
        ("fragments", t_frag),
        ("region_graph", t_graph),
        ("agglomeration", t_agg),
        ("total", total),
    ):
        out[key] = {"seconds": seconds, "mvox_per_s": mvox / seconds}
    slider = []
    for threshold in SWEEP:
        table, t_table = timed(segment_table, tree, n, threshold)
        _, t_apply = timed(apply_table, table, frags)
        slider.append(
            {
                "threshold": threshold,
                "segments": int(table.max()),
                "table_s": t_table,
                "apply_s": t_apply,
                "total_s": t_table + t_apply,
            }
        )
    return out, slider


# ------------------------------------------------------------------ memory
def current_rss() -> int:
    """Resident memory now (Linux ``/proc``), else the peak so far (``ru_maxrss``)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _RssPeak:
    """Peak resident memory, resettable through ``/proc/self/clear_refs`` on Linux."""

    def __init__(self):
        self.resettable = True
        try:
            self.reset()
            self.peak()
        except (OSError, ValueError):
            self.resettable = False

    def reset(self) -> None:
        if self.resettable:
            Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> int:
        if not self.resettable:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise ValueError("no VmHWM")


def memory_child(spec: dict) -> dict:
    """Run one whole-volume segmentation and report its memory (in a fresh process).

    Each stage (prediction, fragments, region graph, agglomeration, the final
    table lookup) is wrapped to record its own peak: numpy allocations with
    ``tracemalloc`` when ``spec["tracemalloc"]``, else the resident set.
    """
    import tracemalloc

    import torch

    import napari_connectome.models.inference as inference_module
    import napari_connectome.segmentation as segmentation_module
    from napari_connectome.models import load_model

    torch.set_num_threads(spec["threads"])
    tracing = spec["tracemalloc"]
    rss = _RssPeak()
    peaks: dict[str, int] = {}

    def reset():
        tracemalloc.reset_peak() if tracing else rss.reset()

    def peak():
        return tracemalloc.get_traced_memory()[1] if tracing else rss.peak()

    def wrap(module, name, label):
        fn = getattr(module, name)

        def wrapper(*args, **kwargs):
            reset()
            out = fn(*args, **kwargs)
            peaks[label] = peak()
            reset()
            return out

        setattr(module, name, wrapper)

    wrap(inference_module, "predict_boundaries", "predict_boundaries")
    for name in ("make_fragments", "build_region_graph", "agglomerate"):
        wrap(segmentation_module, name, name)
    model = load_model(spec["model"], device="cpu")
    if tracing:
        tracemalloc.start()
        base = 0
    else:
        base = current_rss()
    reset()
    with np.load(spec["data"]) as data:
        raw = data["raw"]
    peaks["load input"] = peak()
    start = time.perf_counter()
    result = segmentation_module.segment_volume(raw, spec["voxel"], model=model, device="cpu")
    segmentation = result.segmentation
    seconds = time.perf_counter() - start
    peaks["segmentation_at"] = peak()
    io_bytes = raw.nbytes + result.boundaries.nbytes + result.fragments.nbytes
    io_bytes += segmentation.nbytes
    if not tracing and not rss.resettable:  # one overall peak only
        peaks = {"whole run": rss.peak()}
    return {
        "shape": list(raw.shape),
        "seconds": seconds,
        "input_bytes": raw.nbytes,
        "output_bytes": io_bytes - raw.nbytes,
        "io_bytes": io_bytes,
        "before": base,
        "stage_peaks": {k: v - base for k, v in peaks.items()},
    }


def memory(data: Path, voxel, model_path: str, threads: int) -> dict:
    out = {}
    for tracing in (False, True):
        spec = {
            "data": str(data),
            "voxel": list(voxel),
            "model": model_path,
            "threads": threads,
            "tracemalloc": tracing,
        }
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory child failed:\n{proc.stderr[-2000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        key = "traced" if tracing else "rss"
        stage_peaks = child.pop("stage_peaks")
        out[f"{key}_stages"] = stage_peaks
        out[f"{key}_peak"] = max(stage_peaks.values())
        out[f"{key}_ratio"] = out[f"{key}_peak"] / child["io_bytes"]
        if tracing:
            out["seconds_with_tracemalloc"] = child["seconds"]
        else:
            out.update({k: v for k, v in child.items() if k != "before"})
            out["rss_before"] = child["before"]
    out["target_ratio"] = MEMORY_TARGET
    return out


# ------------------------------------------------------------------ accuracy
def baseline_boundaries(raw: np.ndarray) -> np.ndarray:
    """Smoothed, inverted raw image rescaled per section: dark membranes -> high values."""
    smooth = ndi.gaussian_filter(raw.astype(np.float32), (0, 1, 1))
    low = np.percentile(smooth, 0.5, axis=(1, 2), keepdims=True)
    high = np.percentile(smooth, 99.5, axis=(1, 2), keepdims=True)
    scaled = np.clip((smooth - low) / np.maximum(high - low, 1e-6), 0, 1)
    return (1.0 - scaled).astype(np.float32)


def _scores(seg, truth) -> dict:
    from napari_connectome.core.metrics import evaluate_segmentation

    s = evaluate_segmentation(seg, truth)
    return {k: s[k] for k in METRICS}


def score_3d(boundaries, voxel, truth, thresholds, raw=None) -> dict:
    """Segment as ``segment_volume`` does (section correction included) and score."""
    from napari_connectome.segmentation import check_sections, segment_boundaries_state

    sections = check_sections(raw, voxel)[0] if raw is not None else None
    state = segment_boundaries_state(boundaries.copy(), voxel, sections=sections)
    rows = {}
    for t in thresholds:
        seg = state.segmentation_at(t)
        rows[t] = _scores(seg, truth) | {"segments": int(seg.max())}
    return {"n_fragments": state.n_fragments, "rows": rows}


def score_2d_sections(boundaries, pixel, truth, thresholds, raw=None) -> dict:
    """Segment and score each section on its own; ids made unique across sections."""
    from napari_connectome.segmentation import segment_boundaries_state

    states = [segment_boundaries_state(b, pixel) for b in boundaries]
    rows = {}
    for t in thresholds:
        segs, offset = [], 0
        for state in states:
            seg = state.segmentation_at(t).astype(np.uint64)
            seg[seg > 0] += offset
            offset = int(seg.max())
            segs.append(seg)
        stack = np.stack(segs)
        rows[t] = _scores(stack, truth) | {"segments": offset}
    return {"n_fragments": sum(s.n_fragments for s in states), "rows": rows}


def accuracy(data_dir: Path, model, isbi_pred, thresholds) -> list[dict]:
    """Score model and baseline on the held-out sections of every volume with truth."""
    out = []

    def add(name, held, note, truth, voxel, model_bnd, raw, two_d=False):
        score = score_2d_sections if two_d else score_3d
        voxel_arg = voxel[1:] if two_d else voxel
        for method, bnd in (("model", model_bnd), ("baseline", baseline_boundaries(raw))):
            log(f"accuracy: {name} {method}")
            res = score(bnd, voxel_arg, truth, thresholds, raw)
            out.append({"volume": name, "held_out": held, "note": note, "method": method} | res)

    path = data_dir / ISBI[0]
    if path.exists():
        with np.load(path) as d:
            raw, truth = d["raw"][20:30], d["labels_cc"][20:30]
        add("ISBI 2012", "z 20-29", "3D, truth labels_cc", truth, ISBI[1], isbi_pred[20:30], raw)
    path = data_dir / GALA[0]
    if path.exists():
        with np.load(path) as d:
            raw_all, truth = d["raw"], d["labels"][40:50]
        log("predicting the gala volume (xy, xz, yz planes)")
        pred = predict(raw_all, GALA[1], model)[40:50]
        add("gala FIB-SEM", "z 40-49", "3D, truth labels", truth, GALA[1], pred, raw_all[40:50])
    path = data_dir / VNC[0]
    if path.exists():
        with np.load(path) as d:
            raw, membranes = d["raw"][15:20], d["membranes"][15:20]
        log("predicting VNC sections 15-19")
        pred = predict(raw, VNC[1], model)
        truth = truth_2d_from_membranes(membranes)
        note = "per-section 2D: truth = components of membranes == 0 (no neuron ids)"
        add("VNC stack 1", "z 15-19", note, truth, VNC[1], pred, raw, two_d=True)
    return out


# ------------------------------------------------------------------ report
def markdown(res: dict) -> str:
    lines = []
    if res.get("note"):
        lines += [f"> **NOTE: {res['note']}**", ""]
    lines += [
        f"Model: `{res['model']}`; {res['machine']}; torch threads {res['threads']}; "
        f"default threshold {res['default_threshold']:g}.",
        "",
        "## Inference (ISBI crop " + "x".join(map(str, res["inference"]["crop"])) + ")",
        "",
        "| device | seconds | Mvox/s |",
        "|---|---:|---:|",
    ]
    cpu = res["inference"]["cpu"]
    lines.append(
        f"| CPU ({cpu['threads']} threads) | {cpu['seconds']:.2f} | {cpu['mvox_per_s']:.2f} |"
    )
    if "cpu_plain" in res["inference"]:  # the default averages mirrored views (augment)
        p = res["inference"]["cpu_plain"]
        lines.append(f"| CPU, one view (augment=1) | {p['seconds']:.2f} | {p['mvox_per_s']:.2f} |")
    cuda = res["inference"]["cuda"]
    if isinstance(cuda, dict):
        lines.append(f"| {cuda['device']} | {cuda['seconds']:.2f} | {cuda['mvox_per_s']:.2f} |")
    else:
        lines.append("| CUDA | no GPU | - |")
    st = res["stages"]
    lines += [
        "",
        "## Fragments, region graph, agglomeration (ISBI "
        + "x".join(map(str, st["shape"]))
        + ", predicted boundaries)",
        "",
        f"{st['n_fragments']} fragments, {st['n_edges']} edges, {st['n_merges']} merges.",
        "",
        "| stage | seconds | Mvox/s |",
        "|---|---:|---:|",
    ]
    for key in ("fragments", "region_graph", "agglomeration", "total"):
        lines.append(f"| {key} | {st[key]['seconds']:.2f} | {st[key]['mvox_per_s']:.2f} |")
    lines += [
        "",
        "## Threshold slider (`table_at` + `apply_table`, ISBI 30x512x512)",
        "",
        "| threshold | segments | table s | apply s | total s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in res["slider"]:
        lines.append(
            f"| {row['threshold']:g} | {row['segments']} | {row['table_s']:.3f} | "
            f"{row['apply_s']:.3f} | {row['total_s']:.3f} |"
        )
    mem = res["memory"]
    if mem:
        mib = 2.0**20
        io_bytes = mem["io_bytes"]
        lines += [
            "",
            "## Peak memory of a whole-volume `segment_volume` (ISBI "
            + "x".join(map(str, mem["shape"]))
            + ", fresh process)",
            "",
            f"Input + outputs (raw, boundaries, fragments, segmentation): "
            f"{io_bytes / mib:.0f} MiB. Peaks are growth over the memory before the input "
            f"was loaded ({mem['rss_before'] / mib:.0f} MiB resident: python, torch, model); "
            "tracemalloc sees numpy allocations only (not torch's).",
            "",
            "| stage | resident peak MiB | / (input + outputs) | numpy peak MiB "
            "| / (input + outputs) |",
            "|---|---:|---:|---:|---:|",
        ]
        for stage in mem["traced_stages"]:
            rss = mem["rss_stages"].get(stage)
            traced = mem["traced_stages"][stage]
            rss_cells = f"{rss / mib:.0f} | {rss / io_bytes:.2f}" if rss is not None else "- | -"
            lines.append(
                f"| {stage} | {rss_cells} | {traced / mib:.0f} | {traced / io_bytes:.2f} |"
            )
        ok = "ok" if mem["rss_ratio"] < mem["target_ratio"] else "MISSED"
        lines += [
            f"| **whole run** | {mem['rss_peak'] / mib:.0f} | **{mem['rss_ratio']:.2f}** "
            f"(target < {mem['target_ratio']:g}: {ok}) | {mem['traced_peak'] / mib:.0f} "
            f"| {mem['traced_ratio']:.2f} |",
            "",
            f"Run time {mem['seconds']:.1f} s ({mem['seconds_with_tracemalloc']:.1f} s "
            "with tracemalloc).",
        ]
    lines += [
        "",
        f"## Accuracy on held-out sections at the default threshold {res['default_threshold']:g}",
        "",
        "VOI in bits, adapted Rand error (0 is perfect); baseline = the same fragments and "
        "agglomeration on the smoothed (sigma 1 px), inverted raw image, no model.",
        "",
        "| volume | held out | method | fragments | segments | VOI split | VOI merge | VOI "
        "| ARAND | scoring |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    default = res["default_threshold"]
    for entry in res["accuracy"]:
        r = entry["rows"][str(default)]
        lines.append(
            f"| {entry['volume']} | {entry['held_out']} | {entry['method']} | "
            f"{entry['n_fragments']} | {r['segments']} | {r['voi_split']:.3f} | "
            f"{r['voi_merge']:.3f} | {r['voi']:.3f} | {r['arand']:.3f} | {entry['note']} |"
        )
    lines += [
        "",
        "## Threshold sweep (reported only; the default is fixed, not tuned on these)",
        "",
        "VOI / ARAND per threshold.",
        "",
        "| volume | method | " + " | ".join(f"{t:g}" for t in res["sweep"]) + " |",
        "|---|---|" + "---:|" * len(res["sweep"]),
    ]
    for entry in res["accuracy"]:
        cells = [
            f"{entry['rows'][str(t)]['voi']:.2f} / {entry['rows'][str(t)]['arand']:.3f}"
            for t in res["sweep"]
        ]
        lines.append(f"| {entry['volume']} | {entry['method']} | " + " | ".join(cells) + " |")
    lines += ["", f"Total benchmark time {res['seconds']:.0f} s."]
    return "\n".join(lines)


def run(args) -> dict:
    import torch

    from napari_connectome.models import load_model
    from napari_connectome.segmentation import DEFAULT_THRESHOLD

    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    data_dir = Path(args.data_dir)
    isbi_path = data_dir / ISBI[0]
    if not isbi_path.exists():
        raise SystemExit(f"data not found: {isbi_path} (pass --data-dir)")
    folder = Path(tempfile.mkdtemp(prefix="segment-benchmark-"))
    model_path, note = resolve_model(args.model, folder)
    if note:
        log("!" * 20 + " " + note)
    with np.load(isbi_path) as d:
        isbi_raw = d["raw"]
    log("inference")
    infer, isbi_pred = inference(isbi_raw, ISBI[1], model_path)
    log("fragments, region graph, agglomeration, slider")
    stage_res, slider = stages(isbi_pred, ISBI[1])
    mem = {}
    if not args.skip_memory:
        log("memory (two fresh processes)")
        mem = memory(isbi_path, ISBI[1], model_path, args.threads)
    thresholds = sorted({*SWEEP, DEFAULT_THRESHOLD})
    model = load_model(model_path, device="cpu")
    acc = accuracy(data_dir, model, isbi_pred, thresholds)
    for entry in acc:  # JSON keys are strings
        entry["rows"] = {str(t): v for t, v in entry["rows"].items()}
    return {
        "model": args.model if not note else f"{args.model} (absent: tiny random stand-in)",
        "model_path": model_path,
        "note": note,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "threads": args.threads,
        "default_threshold": DEFAULT_THRESHOLD,
        "sweep": thresholds,
        "inference": infer,
        "stages": stage_res,
        "slider": slider,
        "memory": mem,
        "accuracy": acc,
        "seconds": time.perf_counter() - start,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder of the .npz files")
    parser.add_argument("--model", default="bundled", help="'bundled' or a weights file")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(json.loads(args.memory_child))))
        return 0
    res = run(args)
    print(json.dumps(res) if args.json else markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
