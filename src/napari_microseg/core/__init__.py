"""The napari-free core: io, models, tiled inference, post-processing, training, metrics.

Nothing under this package imports napari, qtpy or magicgui; a test enforces it.
"""
