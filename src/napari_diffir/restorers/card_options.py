"""A model card's recommended options become the defaults of every restorer built from it.

Some settings are chosen after training, for the weights: srdiff-sr4's sampling temperature was
picked on the validation images of its training split. They belong to the model, not the code,
so the card records them (``"defaults": {"options": {...}, "chosen": "how"}``) and the bundled
models and the user's models alike start from them; a caller's option still wins.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..restorer import Option

__all__ = ["card_option_defaults", "with_card_defaults"]


def card_option_defaults(card: dict[str, Any]) -> dict[str, Any]:
    """The option values a model card recommends (``{}`` when it names none)."""
    defaults = card.get("defaults") or {}
    options = defaults.get("options") if isinstance(defaults, dict) else None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"the model card's defaults.options must be a mapping of option names to values, "
                         f"not {options!r}")
    return dict(options)


def with_card_defaults(options: tuple[Option, ...], card: dict[str, Any]) -> tuple[Option, ...]:
    """``options`` with the defaults ``card`` recommends, each checked as a caller's value would be.

    :raises ValueError: naming an option the restorer does not have, or a value it refuses.
    """
    wanted = card_option_defaults(card)
    known = {o.name: o for o in options}
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"the model card sets option(s) {', '.join(map(repr, unknown))}, which the restorer does "
                         f"not have (its options: {', '.join(known) or 'none'})")
    return tuple(dataclasses.replace(o, default=o.validate(wanted[o.name])) if o.name in wanted else o
                 for o in options)
