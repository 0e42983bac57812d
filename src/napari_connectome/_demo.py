"""The demo behind ``bash run.sh``: the sample phantom, segmented, in napari.

With a display, napari opens with the sample, its truth and the docks, and the
Segment dock starts on the whole volume. Headless (no display, or
``--headless``), the same happens under Xvfb and the outputs are written to a
folder: the segmentation store, screenshots of the napari window (the sample
with its truth, then segmented) and a summary with the scores against the truth.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

#: The plugin's docks the demo opens, the first one in front.
DEMO_DOCKS = ("Segment", "Proofread", "Phantom", "Evaluate")


def _bundled_model_available() -> bool:
    from .models import bundled_model_path

    return bundled_model_path().is_file()


def open_demo_viewer(*, show: bool = True):
    """Open napari with the sample phantom, its truth and the plugin's docks.

    Parameters
    ----------
    show : bool
        Show the window.

    Returns
    -------
    tuple
        ``(viewer, phantom, segment_dock)``.
    """
    import napari

    from ._sample_data import phantom_layer_data, sample_phantom_path
    from .synthetic import load_phantom

    with sample_phantom_path() as path:
        phantom = load_phantom(path)
    viewer = napari.Viewer(title="napari-connectome demo", show=show)
    for data, kwargs, layer_type in phantom_layer_data(phantom):
        getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    docks = {}
    for name in reversed(DEMO_DOCKS):
        _, docks[name] = viewer.window.add_plugin_dock_widget(
            "napari-connectome", name, tabify=True
        )
    viewer.window.resize(1600, 1000)
    viewer.dims.set_current_step(0, viewer.dims.nsteps[0] // 2)
    viewer.reset_view()
    segment = docks["Segment"]
    segment.image.value = viewer.layers["EM"]
    segment.scope.value = "whole volume"
    return viewer, phantom, segment


def run_interactive() -> None:
    """Open the demo window and start segmenting the sample (blocks until closed)."""
    import napari

    viewer, _, segment = open_demo_viewer(show=True)
    if _bundled_model_available():
        segment.run()
    del viewer
    napari.run()


def _wait_for(dock, timeout: float = 600.0) -> None:
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while dock.controls.worker is not None:
        if time.monotonic() > deadline:
            raise TimeoutError("the demo segmentation did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)
    QApplication.processEvents()


def write_headless_outputs(output: Path) -> list[Path]:
    """Run the demo in a (virtual) window and write its outputs.

    Parameters
    ----------
    output : pathlib.Path
        Folder for the outputs (created).

    Returns
    -------
    list of pathlib.Path
        The files and stores written.
    """
    from qtpy.QtWidgets import QApplication

    from .core.metrics import evaluate_segmentation
    from .segmentation import save_result

    output.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    viewer, phantom, segment = open_demo_viewer(show=True)
    try:
        summary = {
            "sample": "napari-connectome phantom",
            "shape_zyx": list(phantom.raw.shape),
            "voxel_size_nm": list(phantom.voxel_size),
            "neurons": int(len(np.unique(phantom.neurons))),
            "synapses": int(len(np.unique(phantom.synapses)) - 1),
            "docks": list(DEMO_DOCKS),
        }
        QApplication.processEvents()  # let the docks lay out before the screenshots
        written.append(_screenshot(viewer, output / "napari_sample_truth.png"))
        if _bundled_model_available():
            started = time.perf_counter()
            segment.run()
            _wait_for(segment)
            if segment.result is None:
                raise RuntimeError(f"segmentation failed: {segment.controls.status.value}")
            summary["segment_seconds"] = round(time.perf_counter() - started, 2)
            result = segment.result
            truth = np.where(phantom.membranes, 0, phantom.neurons)
            scores = evaluate_segmentation(result.segmentation, truth)
            summary["scores_vs_truth"] = scores
            summary["fragments"] = result.n_fragments
            written.append(
                save_result(
                    result,
                    output / "sample_segmentation.zarr",
                    attrs={"input": "napari-connectome sample phantom"},
                    overwrite=True,
                )
            )
            viewer.layers["neurons (truth)"].visible = False
        else:
            summary["note"] = "no bundled model installed: the sample was opened, not segmented"
        summary["layers"] = [layer.name for layer in viewer.layers]
        QApplication.processEvents()
        written.append(_screenshot(viewer, output / "napari_window.png"))
    finally:
        viewer.close()
    summary_path = output / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return [*written, summary_path]


def _screenshot(viewer, path: Path) -> Path:
    from skimage.io import imsave

    image = viewer.screenshot(canvas_only=False, flash=False)
    imsave(path, np.asarray(image), check_contrast=False)
    return path
