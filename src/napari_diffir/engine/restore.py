"""Placeholder replaced within minutes by the lead's engine."""


def restore(data, restorer, **kwargs):
    raise RuntimeError("engine not written yet")
