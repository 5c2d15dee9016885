"""The napari side of napari-diffir: the Restore widget, its worker, output layers, sample data.

Kept import-light: napari imports these modules only when a contribution in napari.yaml is used.
"""
