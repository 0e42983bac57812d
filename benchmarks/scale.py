"""Benchmark blockwise segmentation and export on a phantom volume of about a gigavoxel.

Steps:

1. write an EM phantom of ``--size`` to a zarr store on disk, slab by slab: each
   slab of ``SLAB`` sections is one ``make_phantom`` tile of ``SLAB x TILE x TILE``
   voxels with its own seed, mirrored (flipped every other tile) to fill the
   plane, so neurites run on across the y/x tile seams; slabs of different
   seeds meet at z seams. Generating a whole gigavoxel phantom at once would
   not fit in memory.
2. ``segment_blockwise`` with 1 and then 2 local worker processes (one thread
   each: the run's parallelism is its workers), bundled model, CPU, default
   block size: wall time per stage, throughput, the speed-up ratio (both runs
   in this process, same volume), and the peak resident memory of every worker
   process (sampled every 0.2 s with psutil, and ``ru_maxrss`` reported by the
   block tasks) and of the driver.
3. export of the segmentation to OME-Zarr with the user's command,
   ``napari-connectome export STORE --labels DEST.ome.zarr`` (streamed block by
   block), in a fresh process: wall time (process start included), throughput and
   that process's peak resident memory.

Prints a Markdown table; ``--json`` prints one JSON object with the same figures.

Usage::

    python benchmarks/scale.py [--size 1] [--block-size Z Y X] [--augment N] [--workdir DIR]
                               [--json] [--json-out FILE]
    python benchmarks/scale.py --size 16x512x512     # a quick small run
    python benchmarks/scale.py --export-store OUTPUT.zarr   # the export step alone
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VOXEL = (40.0, 4.0, 4.0)
SLAB = 32
TILE = 512
TARGETS = {"peak_gb_per_worker": 4.0, "speedup_2_workers": 1.7, "export_s": 60, "export_gb": 1.0}


def log(message: str) -> None:
    print(f"[scale benchmark] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> tuple:
    """``"1"`` (gigavoxels) or ``"ZxYxX"``."""
    if "x" in text:
        shape = tuple(int(v) for v in text.lower().split("x"))
        if len(shape) != 3 or min(shape) < 1:
            raise SystemExit(f"--size needs Z x Y x X; got {text}")
        return shape
    voxels = float(text) * 1e9
    side = 2048 if voxels >= 5e8 else 1024 if voxels >= 6e7 else 512
    return (max(1, int(round(voxels / side**2))), side, side)


def write_phantom(path: Path, shape: tuple) -> float:
    import zarr

    from napari_connectome.synthetic import make_phantom

    start = time.perf_counter()
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    raw = root.create_array(
        "raw", shape=shape, dtype=np.uint8, chunks=(SLAB, TILE, TILE), fill_value=0
    )
    raw.attrs["voxel_size"] = list(VOXEL)
    nz, ny, nx = shape
    for k, z0 in enumerate(range(0, nz, SLAB)):
        depth = min(SLAB, nz - z0)
        tile = make_phantom((depth, min(TILE, ny), min(TILE, nx)), VOXEL, seed=100 + k).raw
        rows = []
        for i in range(-(-ny // tile.shape[1])):
            row = [
                tile[:, :: (-1 if i % 2 else 1), :: (-1 if j % 2 else 1)]
                for j in range(-(-nx // tile.shape[2]))
            ]
            rows.append(np.concatenate(row, axis=2))
        raw[z0 : z0 + depth] = np.concatenate(rows, axis=1)[:, :ny, :nx]
    return time.perf_counter() - start


class Sampler:
    """Peak RSS of this process and of each of its descendants, sampled in a thread."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self.me = psutil.Process()
        self.interval = interval
        self.peaks: dict = {}
        self.driver = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                self.driver = max(self.driver, self.me.memory_info().rss)
                for child in self.me.children(recursive=True):
                    try:
                        cmd = " ".join(child.cmdline())
                        rss = child.memory_info().rss
                    except psutil.Error:
                        continue
                    if "spawn_main" in cmd or "multiprocessing" in cmd:
                        self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), rss)
            except psutil.Error:
                pass
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def segment(raw_spec: str, out: Path, workers: int, block_size=None, augment=None) -> dict:
    from napari_connectome.blockwise import segment_blockwise
    from napari_connectome.blockwise_work import work_folder
    from napari_connectome.models import bundled_model_path

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work_folder(out), ignore_errors=True)  # no blocks resumed from a last run
    scratch = {}

    def progress(fraction, message):
        if message.startswith("stitching"):  # every block done: the work folder is full
            scratch["gb"] = disk_gb(work_folder(out))

    with Sampler() as sampler:
        start = time.perf_counter()
        result = segment_blockwise(
            raw_spec,
            out,
            voxel_size=VOXEL,
            model="bundled",
            model_sha256=hashlib.sha256(bundled_model_path().read_bytes()).hexdigest(),
            device="cpu",
            scheduler="processes",
            workers=workers,
            block_size=block_size,
            augment=augment,
            progress=progress,
        )
        seconds = time.perf_counter() - start
    # the largest sampled processes are the workers (nannies stay small)
    sampled = sorted(sampler.peaks.values(), reverse=True)[:workers]
    reported = [w["peak_rss"] for w in result["workers"].values()]
    return {
        "workers": workers,
        "seconds": seconds,
        "stages_s": result["seconds"],
        "blocks": result["blocks"],
        "block_size": list(result["block_size"]),
        "blocks_resumed": result["blocks_resumed"],
        "augment": int(result["augment"]),
        "fragments": int(result["tree"].n_fragments),
        "edges": int(result["graph"].n_edges),
        "peak_gb_per_worker_sampled": max(sampled, default=0) / 1e9,
        "peak_gb_per_worker_reported": max(reported, default=0) / 1e9,
        "driver_peak_gb": sampler.driver / 1e9,
        "work_folder_gb": scratch.get("gb", 0.0),
        "store_gb": disk_gb(out),
    }


def disk_gb(path: Path) -> float:
    """Bytes on disk under a folder (allocated blocks), in GB."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total / 1e9


# Runs the export command as its only child: that child's peak resident memory is then
# this wrapper's RUSAGE_CHILDREN figure (the benchmark's own children, the dask
# workers, would count in the benchmark process's).
_EXPORT = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
seconds = time.perf_counter() - start
if done.returncode:
    sys.exit(f"export failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_gb": peak / 1e9}))
"""


def export_command(store: Path, dest: Path) -> list[str]:
    """``napari-connectome export STORE --labels DEST``, as a user runs it."""
    script = Path(sys.executable).with_name("napari-connectome")
    if script.is_file():
        return [str(script), "export", str(store), "--labels", str(dest)]
    code = "import sys; from napari_connectome.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code, "export", str(store), "--labels", str(dest)]


def export(store: Path, dest: Path) -> dict:
    """Time the export command in a fresh process (start included) and take its peak RSS."""
    shutil.rmtree(dest, ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-c", _EXPORT, *export_command(store, dest)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the export step failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def export_only(store: Path, as_json: bool) -> int:
    """Run the export step alone on an existing store (step 3 of the module docstring)."""
    import zarr

    shape = tuple(zarr.open_group(str(store), mode="r")["segmentation"].shape)
    gvox = float(np.prod(shape)) / 1e9
    with tempfile.TemporaryDirectory(prefix="nc-scale-export-") as work:
        exp = export(store, Path(work) / "labels.ome.zarr")
    figures = {"shape": list(shape), "gigavoxels": gvox, "export": exp, "targets": TARGETS}
    figures["export"]["gvox_per_s"] = gvox / exp["seconds"]
    if as_json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"## Export step: {shape} = {gvox:.3f} Gvox\n")
    print("| figure | value | target |")
    print("|---|---|---|")
    print(
        f"| export to OME-Zarr | {exp['seconds']:.1f} s ({gvox / exp['seconds']:.3f} Gvox/s) "
        f"| < 60 s for 1 Gvox |"
    )
    print(f"| export peak memory | {exp['peak_gb']:.2f} GB | < 1 GB |")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1", help="gigavoxels (default 1) or ZxYxX")
    parser.add_argument("--workdir", default=None, help="where to write (default: a temp dir)")
    parser.add_argument(
        "--block-size",
        type=int,
        nargs=3,
        default=None,
        metavar="N",
        help="block size Z Y X (default: the blockwise default)",
    )
    parser.add_argument(
        "--augment",
        type=int,
        default=None,
        choices=(1, 2, 4, 8),
        help="test-time views per tile (default: the model's default, as users get)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--json-out", default=None, metavar="FILE", help="also write the JSON object to FILE"
    )
    parser.add_argument(
        "--export-store",
        default=None,
        metavar="STORE",
        help="run only the export step, on this existing segmentation store",
    )
    args = parser.parse_args(argv)
    if args.export_store:
        return export_only(Path(args.export_store), args.json)
    shape = parse_size(args.size)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="nc-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    gvox = float(np.prod(shape)) / 1e9
    begin = time.perf_counter()
    try:
        log(f"writing a {shape} phantom ({gvox:.3f} Gvox) to {work / 'phantom.zarr'}")
        gen = write_phantom(work / "phantom.zarr", shape)
        runs = {}
        for workers in (1, 2):
            log(f"segmenting blockwise with {workers} worker(s)")
            runs[workers] = segment(
                f"{work / 'phantom.zarr'}:raw",
                work / "seg.zarr",
                workers,
                args.block_size,
                args.augment,
            )
            log(f"  {runs[workers]['seconds']:.1f} s {runs[workers]['stages_s']}")
            if runs[workers]["blocks_resumed"]:
                log("  warning: blocks were resumed from an earlier run; timings are too low")
        log("exporting the segmentation to OME-Zarr")
        try:
            exp = export(work / "seg.zarr", work / "labels.ome.zarr")
        except SystemExit as error:  # keep the segmentation figures of the long run
            log(str(error))
            exp = {"seconds": float("nan"), "peak_gb": float("nan"), "error": str(error)}
        disk = {
            "phantom_gb": disk_gb(work / "phantom.zarr"),
            "work_folder_gb": max(r["work_folder_gb"] for r in runs.values()),
            "store_gb": runs[2]["store_gb"],
            "export_gb": disk_gb(work / "labels.ome.zarr"),
        }
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    speedup = runs[1]["seconds"] / runs[2]["seconds"]
    blocks_speedup = runs[1]["stages_s"]["blocks"] / runs[2]["stages_s"]["blocks"]
    peak = max(
        max(r["peak_gb_per_worker_sampled"], r["peak_gb_per_worker_reported"])
        for r in runs.values()
    )
    figures = {
        "shape": list(shape),
        "gigavoxels": gvox,
        "voxel_size": list(VOXEL),
        "phantom_generation_s": gen,
        "cpu_count": os.cpu_count(),
        "runs": {str(k): v for k, v in runs.items()},
        "speedup_2_workers": speedup,
        "speedup_2_workers_block_stage": blocks_speedup,
        "peak_gb_per_worker": peak,
        "export": {**exp, "gvox_per_s": gvox / exp["seconds"]},
        "disk": disk,
        "total_s": time.perf_counter() - begin,
        "targets": TARGETS,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=1))
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    print(f"## Blockwise scale benchmark: {shape} = {gvox:.3f} Gvox, voxel {VOXEL} nm\n")
    print(
        "| run | wall s | Mvox/s | blocks s | stitch s | agglomerate s | write s | "
        "peak GB/worker | driver peak GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k, r in runs.items():
        st = r["stages_s"]
        worker_peak = max(r["peak_gb_per_worker_sampled"], r["peak_gb_per_worker_reported"])
        print(
            f"| {k} worker(s) | {r['seconds']:.1f} | {gvox * 1e3 / r['seconds']:.2f} | "
            f"{st['blocks']:.1f} | {st['stitch']:.1f} | {st['agglomerate']:.1f} | "
            f"{st['write']:.1f} | {worker_peak:.2f} | {r['driver_peak_gb']:.2f} |"
        )
    print()
    print("| figure | value | target |")
    print("|---|---|---|")
    print(f"| speed-up, 2 workers vs 1 (whole run) | {speedup:.2f}x | >= 1.7x |")
    print(f"| speed-up, block stage only | {blocks_speedup:.2f}x | |")
    print(f"| peak memory per worker | {peak:.2f} GB | < 4 GB |")
    print(
        f"| export to OME-Zarr | {exp['seconds']:.1f} s ({gvox / exp['seconds']:.3f} Gvox/s) "
        f"| < 60 s for 1 Gvox |"
    )
    print(f"| export peak memory | {exp['peak_gb']:.2f} GB | < 1 GB |")
    print(
        f"\nfragments {runs[2]['fragments']}, region-graph edges {runs[2]['edges']}, "
        f"blocks {runs[2]['blocks']} of {runs[2]['block_size']}, {runs[2]['augment']} "
        f"test-time view(s) per tile; phantom written in {gen:.1f} s"
    )
    print(
        f"disk: phantom {disk['phantom_gb']:.2f} GB, work folder {disk['work_folder_gb']:.2f} GB, "
        f"store {disk['store_gb']:.2f} GB, export {disk['export_gb']:.2f} GB; "
        f"benchmark total {figures['total_s'] / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
