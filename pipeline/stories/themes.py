"""The story themes this backend knows. An unknown theme fails the story with this list.

The ids are what the external API stores in ``stories.story_theme``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Theme:
    id: str
    title: str  # shown to people
    setting: str  # a phrase used by writers and illustrators, e.g. "among the stars"


THEMES: dict[str, Theme] = {
    t.id: t
    for t in (
        Theme("space_adventure", "Space Adventure", "among the stars and planets"),
        Theme("underwater", "Underwater Voyage", "deep under the sea"),
        Theme("enchanted_forest", "Enchanted Forest", "in an enchanted forest"),
        Theme("dinosaurs", "Dinosaur Valley", "in a valley of friendly dinosaurs"),
        Theme("pirates", "Pirate Treasure", "on a pirate ship at sea"),
        Theme("superhero", "Superhero City", "in a bright city of heroes"),
    )
}

# Spellings the external API has been seen to send for the same themes.
ALIASES: dict[str, str] = {
    "space": "space_adventure",
    "ocean": "underwater",
    "under_the_sea": "underwater",
    "forest": "enchanted_forest",
    "fairy_forest": "enchanted_forest",
    "dinosaur": "dinosaurs",
    "pirate": "pirates",
    "superheroes": "superhero",
}


def resolve_theme(raw: str) -> Theme | None:
    """The theme for a stored value, tolerant of case, spaces and hyphens; None if unknown."""
    key = raw.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    return THEMES.get(key)
