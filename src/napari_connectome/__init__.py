"""napari-connectome: connectomics in napari.

Importing this package imports neither Qt nor torch; the heavy parts load
only when a dock, the command line or a model needs them.
"""

__version__ = "0.1.0"
