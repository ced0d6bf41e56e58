"""The offline story writer (no model, no network): hand-written kits as data, and the writer.

``kits`` holds the typed material and its loader (``data/*.toml``); ``writer`` turns a
``StoryRequest`` into an outline and page texts. ``LocalStoryWriter`` is what the provider
registry builds for ``TEXT_PROVIDER=local``.
"""
from pipeline.providers.offline_text.kits import MAX_PAGES, KitError, Material, load_material, material
from pipeline.providers.offline_text.writer import (
    MIN_PAGES,
    AgeBand,
    LocalStoryWriter,
    PlannedPage,
    StoryPlan,
    age_band,
    normalize_name,
    plan_story,
)

__all__ = [
    "MAX_PAGES", "MIN_PAGES", "AgeBand", "KitError", "LocalStoryWriter", "Material", "PlannedPage",
    "StoryPlan", "age_band", "load_material", "material", "normalize_name", "plan_story",
]
