"""What the docs' screenshot scripts share: throwaway napari settings, the Qt event loop, and a
1280x800 viewer with one of the plugin's docks at a fixed width (so the pictures are the same
on every machine). Imported by ``napari_screenshots.py`` and ``train_screenshots.py``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).parent / "images"
WINDOW = (1280, 800)


def start(work: Path | None = None) -> Path:
    """Point napari's settings at ``work`` (a new temporary folder by default; the user's own
    settings are never touched), silence its pop-ups and create ``OUT``; returns ``work``.
    Call before anything imports napari."""
    work = Path(tempfile.mkdtemp()) if work is None else work
    os.environ["NAPARI_CONFIG"] = str(work / "settings.yaml")
    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"
    OUT.mkdir(exist_ok=True)
    return work


def settle(seconds: float = 0.3) -> None:
    """Run the Qt event loop for ``seconds`` (repaints, queued signals, worker results)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv)
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def new_viewer():
    """A shown napari viewer of the pictures' size."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*WINDOW)
    return viewer


def add_dock(viewer, widget: str, width: int):
    """The plugin's ``widget`` ("Restore", "Train") docked at ``width`` pixels; returns the widget."""
    from qtpy.QtCore import Qt

    dock, instance = viewer.window.add_plugin_dock_widget("napari-diffir", widget)
    viewer.window._qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
    return instance


def hide_toasts(viewer) -> None:
    """Close notification pop-ups (e.g. napari's PyQt5 deprecation notice) before a picture."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    settle(0.6)
