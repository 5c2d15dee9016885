"""Built-in bundled restorers (registered through the same hook as third-party plugins)."""

from ..hookspecs import hookimpl


@hookimpl
def register_restorers(register):
    """Nothing registered yet: filled in by the bundled work."""
