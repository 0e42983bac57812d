"""The napari Sample menu entry: a small EM phantom with its exact truth."""

from __future__ import annotations

from importlib.resources import as_file, files

SAMPLE_NAME = "phantom_sample.npz"


def sample_phantom_path():
    """Return a context manager giving the path of the bundled sample phantom.

    Returns
    -------
    contextlib.AbstractContextManager
        Yields a :class:`pathlib.Path` to ``phantom_sample.npz``; works from an
        editable install and from an installed wheel.
    """
    return as_file(files("napari_connectome") / "sample_data" / SAMPLE_NAME)


def phantom_layer_data(phantom) -> list[tuple]:
    """Turn a phantom into napari layer data tuples, aligned in nm.

    Parameters
    ----------
    phantom : napari_connectome.synthetic.Phantom
        The phantom to show.

    Returns
    -------
    list of tuple
        ``(data, kwargs, layer_type)`` for the EM image, the neuron truth and
        the synapse truth, all scaled by the voxel size in nm.
    """
    scale = tuple(float(v) for v in phantom.voxel_size)
    metadata = {"voxel_size_nm": scale, "source": "napari-connectome phantom"}
    return [
        (
            phantom.raw,
            {"name": "EM", "scale": scale, "contrast_limits": (0, 255), "metadata": metadata},
            "image",
        ),
        (
            phantom.neurons,
            {"name": "neurons (truth)", "scale": scale, "opacity": 0.25, "metadata": metadata},
            "labels",
        ),
        (
            phantom.synapses,
            {"name": "synapses (truth)", "scale": scale, "opacity": 0.9, "metadata": metadata},
            "labels",
        ),
    ]


def load_sample_phantom() -> list[tuple]:
    """Load the bundled sample phantom as napari layers (the Sample menu entry).

    Returns
    -------
    list of tuple
        Layer data tuples: EM image, neuron truth, synapse truth.
    """
    from .synthetic import load_phantom

    with sample_phantom_path() as path:
        phantom = load_phantom(path)
    return phantom_layer_data(phantom)
