"""File formats, read lazily: TIFF (memory-mapped or page-wise) and OME-Zarr, with their metadata."""

from .source import ImageSource, is_tiff_path, is_zarr_path, open_image

__all__ = ["ImageSource", "is_tiff_path", "is_zarr_path", "open_image"]
