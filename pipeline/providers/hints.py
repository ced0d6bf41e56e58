"""What the offline providers can take from a redo's hint (pipeline/stories/redo.py): the parent's
short wish ("make the dragon green") is data, never instructions, and the offline kits have no
model to understand it, so they read only colour words from it. The text is never printed in a
book (the parent's words may hold anything, a name or an address) and never reaches a prompt's
instructions.
"""
from __future__ import annotations

# Colour words a hint may name, and the tint each gives (sRGB 0-255): the illustrator tints the
# scenery, the writer says the colour.
HINT_COLOURS: dict[str, tuple[int, int, int]] = {
    "green": (40, 170, 70), "red": (210, 40, 40), "blue": (40, 90, 210), "yellow": (240, 210, 40),
    "purple": (140, 60, 190), "pink": (240, 120, 180), "orange": (240, 140, 30), "gold": (220, 180, 60),
    "golden": (220, 180, 60), "silver": (190, 195, 205), "white": (245, 245, 245), "brown": (130, 85, 45),
}


def hint_colour_word(hint: str) -> str | None:
    """The first colour word of ``hint`` (HINT_COLOURS' keys, any case), or None."""
    for word in "".join(ch if ch.isalpha() else " " for ch in hint.lower()).split():
        if word in HINT_COLOURS:
            return word
    return None


def hint_colour(hint: str) -> tuple[int, int, int] | None:
    """The tint (sRGB) for the first colour word of ``hint``, or None."""
    word = hint_colour_word(hint)
    return HINT_COLOURS[word] if word else None
