"""Maintainer tools for the bundled models: evaluate on the training run's validation split,
choose post-processing on training images, and write the shipped files.

Used by ``scripts/bundle_model.py`` and ``scripts/tune_postprocess.py`` only; nothing that
runs for a user imports this package (a test enforces it).
"""
