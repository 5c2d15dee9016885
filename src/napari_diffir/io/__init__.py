"""Reading and writing big images lazily: TIFF (memory-mapped or page-wise), OME-Zarr, streaming."""

from .source import ImageSource, is_tiff_path, is_zarr_path, open_image
from .stream import StreamResult, restore_file

__all__ = ["ImageSource", "StreamResult", "is_tiff_path", "is_zarr_path", "open_image", "restore_file"]
