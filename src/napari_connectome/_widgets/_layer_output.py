"""Put a dock's results on layers, replacing its own earlier results."""

from __future__ import annotations


class LayerOutput:
    """The layers one dock made, by name, so a re-run replaces them.

    A dock only ever changes layers it made itself; when the user deleted or
    renamed one of them, a re-run adds a new layer rather than touching theirs.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer the layers live in.
    """

    def __init__(self, viewer) -> None:
        self._viewer = viewer
        self._layers: dict = {}

    def put(self, data, kwargs: dict, layer_type: str):
        """Add a layer, or update the one this dock made under the same name.

        Parameters
        ----------
        data : array-like
            Layer data.
        kwargs : dict
            Layer keyword arguments; ``name`` is required.
        layer_type : str
            ``"image"``, ``"labels"``, ...

        Returns
        -------
        napari.layers.Layer
            The added or updated layer.
        """
        name = kwargs["name"]
        layer = self._layers.get(name)
        if layer is not None and layer in self._viewer.layers and layer.name == name:
            layer.data = data
            for key in ("scale", "translate", "metadata"):
                if key in kwargs:
                    setattr(layer, key, kwargs[key])
            return layer
        layer = getattr(self._viewer, f"add_{layer_type}")(data, **kwargs)
        self._layers[name] = layer
        return layer
