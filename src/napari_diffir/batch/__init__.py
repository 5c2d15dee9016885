"""The batch frontend: restore whole files block by block on dask, resumable after interruption.

``stream`` plans and runs a file-to-file restoration, ``manifest`` records its progress for a
resume, ``executors`` chooses where dask runs the blocks (threads, processes, a cluster).
"""

from .stream import StreamResult, restore_file

__all__ = ["StreamResult", "restore_file"]
