"""The Synapses dock's layers, replaced on re-run.

Synapse objects (a labels layer: every section a synapse spans), synapse points
and pre -> post arrows, coloured by confidence and filtered by the dock's threshold.
"""

from __future__ import annotations

import numpy as np

from ._scope import unwrap_proxy
from ._synapse_view import pair_arrows, synapse_pixels

SOURCE = "napari-connectome Synapses dock"


class SynapseLayers:
    """Mixin of the Synapses dock: puts the points and arrows on layers.

    The dock provides ``_viewer``, ``_ctx`` (the run's image, region and voxel
    sizes), ``result``, ``threshold``, ``_table()``, and the attributes
    ``_made``, ``_pixels``, ``_arrow_cache`` and ``_arrows_due``.
    """

    def _put(self, name: str, data, kwargs: dict, layer_type: str):
        """Add a layer, or give new data to the one this dock made under ``name``."""
        layer = self._made.get(name)
        if layer is not None and layer in self._viewer.layers and layer.name == name:
            layer.data = data
            for key in ("scale", "translate"):  # setting them re-checks every layer: skip
                if not np.allclose(getattr(layer, key), kwargs[key]):
                    setattr(layer, key, kwargs[key])
            return layer
        layer = unwrap_proxy(getattr(self._viewer, f"add_{layer_type}")(data, name=name, **kwargs))
        self._made[name] = layer
        return layer

    def _deferred_arrows(self) -> None:
        self._arrows_due = False
        if self.result is not None:
            det = self.result.detections
            ids, conf = np.asarray(det.ids), np.asarray(det.confidence)
            self._show_arrows(ids, conf >= float(self.threshold.value))

    def _place(self) -> dict:
        image = self._ctx["image"]
        return {
            "scale": tuple(image.scale),
            "translate": tuple(image.translate),
            "metadata": {"source": SOURCE, "voxel_size_nm": tuple(self._ctx["voxel_size"])},
        }

    def _show_objects(self, conf, keep) -> None:
        """Show the synapse objects, coloured as the points; those under the threshold hide."""
        from napari.utils.colormaps import DirectLabelColormap, ensure_colormap

        ctx, det = self._ctx, self.result.detections
        region, image = ctx["region"], ctx["image"]
        labels = det.labels[None] if det.labels.ndim < len(region.start) else det.labels
        colors = {None: "transparent", 0: "transparent"}
        rgba = ensure_colormap("viridis").map(np.asarray(conf, float)[keep])
        colors.update({int(i): tuple(c) for i, c in zip(det.ids[keep], rgba, strict=True)})
        colormap = DirectLabelColormap(color_dict=colors)
        name = f"{image.name} synapse objects"
        layer = self._made.get(name)
        shown = getattr(layer, "data", None)
        same = shown is det.labels or getattr(shown, "base", None) is det.labels
        if same and layer in self._viewer.layers:
            layer.colormap = colormap  # a new threshold: only the colours change
            return
        place = self._place()
        place["translate"] = tuple(
            np.asarray(image.translate, float)
            + np.asarray(region.start, float) * np.asarray(image.scale, float)
        )
        layer = self._put(name, labels, {**place, "opacity": 0.5}, "labels")
        layer.colormap = colormap

    def _show_points(self, ids, conf, keep) -> None:
        ctx = self._ctx
        det = self.result.detections
        self._pixels = synapse_pixels(det.positions, ctx["run_voxel_size"], ctx["region"])
        layer = self._put(
            f"{ctx['image'].name} synapses",
            self._pixels[keep],
            {"size": 12, "face_colormap": "viridis", "border_color": "white", **self._place()},
            "points",
        )
        layer.features = {"id": ids[keep], "confidence": conf[keep]}
        layer.face_color = "confidence"
        layer.face_contrast_limits = (0.0, 1.0)

    def _show_arrows(self, ids, keep) -> None:
        table, name = self._table(), f"{self._ctx['image'].name} synapse partners"
        if table is None:
            vectors = np.zeros((0, 2, len(self._ctx["region"].start)))
        else:
            vectors, vector_rows = self._arrows(table)
            vectors = vectors[np.isin(ids[vector_rows], ids[keep])]
        layer = self._made.get(name)
        if layer is not None and layer in self._viewer.layers and layer.name == name:
            if layer.data.shape == vectors.shape and np.array_equal(layer.data, vectors):
                return  # unchanged: skip napari's redraw
        self._put(
            name,
            vectors,
            {"edge_color": "orange", "edge_width": 2, "vector_style": "arrow", **self._place()},
            "vectors",
        )

    def _arrows(self, table) -> tuple[np.ndarray, np.ndarray]:
        """Pre -> post arrows; after an edit only those of synapses whose probes changed."""
        seg = table.segments_at_probes()
        cache, region, vs = self._arrow_cache, self._ctx["region"], self._ctx["run_voxel_size"]
        if cache is None or cache[0] is not table or len(cache[1]) != len(seg):
            vectors, rows = pair_arrows(table, vs, region, segments=seg)
        else:
            changed = np.zeros(len(table), bool)
            changed[table.probes.synapse[seg != cache[1]]] = True
            old = ~changed[cache[3]]
            new_vectors, new_rows = pair_arrows(table, vs, region, changed, seg)
            vectors = np.concatenate([cache[2][old], new_vectors])
            rows = np.concatenate([cache[3][old], new_rows])
        self._arrow_cache = (table, seg.copy(), vectors, rows)
        return vectors, rows
