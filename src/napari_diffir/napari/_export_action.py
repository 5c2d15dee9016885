"""The Restore widget's "Export to bioimage.io…" button: the selected model as a bioimage.io package.

One click asks where to save the ``.zip`` and exports the chosen restorer with the chosen weights
(bundled model or loaded checkpoint) and options, off the main thread; the status line says where
the package went, or why it could not be written (e.g. a restorer that is not DiffIR/SRDiff).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ._catalogue import LOAD, takes_weights, widget_message
from ._form import OK_STYLE
from ._options import option_value
from ._runner import process_events_until
from ._weights import ERROR_STYLE
from ._worker import threads_disabled

__all__ = ["ExportAction"]


class ExportAction:
    """Mixin of :class:`~._widget.RestoreWidget`: exports the selected model."""

    def export_model(self, path: str | os.PathLike, wait: bool = False, timeout: float | None = None) -> Future:
        """Export the selected restorer and weights to ``path`` (a ``.zip``, replaced if it exists);
        the Future resolves to the package's path or holds the error shown in the status line."""
        info = self.info
        weights = self._weights.value if takes_weights(info) and self._weights.value != LOAD else None
        options = {name: option_value(info.option(name), w) for name, w in self._option_widgets.items()}
        options = {k: v for k, v in options.items() if v is not None}
        model: Any = weights if isinstance(weights, str) else info.name
        target = Path(path) if str(path).lower().endswith(".zip") else Path(f"{path}.zip")
        future: Future = Future()
        self._export.enabled = False
        self._show_status(f"Exporting {info.display_name} to {target.name}… (validating and testing the package)")

        def work() -> Path:
            from ..bioimageio import export_bioimageio

            return export_bioimageio(model, target, options=options, overwrite=True)

        def done(result: Path) -> None:
            self._export.enabled = True
            self._show_status(f"Exported to {result}")
            future.set_result(result)

        def failed(exc: BaseException) -> None:
            self._export.enabled = True
            self._show_status(f"Export failed: {widget_message(str(exc))}", error=True)
            future.set_exception(exc)

        if threads_disabled():
            try:
                result = work()
            except Exception as exc:
                failed(exc)
            else:
                done(result)
            return future
        from napari.qt.threading import create_worker

        worker = create_worker(work, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(failed)
        self._export_worker = worker  # keep a reference until it is done
        worker.start()
        if wait:
            process_events_until(future.done, timeout)
        return future

    def _on_export_clicked(self, *_: Any) -> None:
        path = self._ask_export_path()
        if path:
            self.export_model(path)

    def _ask_export_path(self) -> str | None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.native, "Export the selected model to bioimage.io",
                                              f"{self.info.name}.zip", "bioimage.io packages (*.zip)")
        return path or None

    def _show_status(self, message: str, error: bool = False) -> None:
        self._status.value = message
        self._status.tooltip = message
        self._status.native.setStyleSheet(ERROR_STYLE if error else OK_STYLE)
