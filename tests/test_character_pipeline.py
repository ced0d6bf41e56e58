"""The same child on every page, through the pipeline: the photo's analysis stores a character
profile per face, every page of a story paints and records the profile of the face the story
chose, and the profile is face data, cleared with face_details."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from pipeline.providers.offline_images.anchor import CHARACTER_KEY, PROFILE_KEY, read_anchor
from pipeline.providers.offline_images.hair import hair_sample_points
from pipeline.providers.profile import CharacterProfile
from tests.support import Db, WorkerProcess, astronaut_png, external_send

BROKER = os.environ["CELERY_BROKER_URL"]
PAGES = int(os.environ["STORY_PAGE_COUNT"])
TOLERANCE = 12.0  # RGB distance: anti-aliasing and PNG are exact, this only absorbs rounding


def page_image(db: Db, key: str) -> tuple[dict[str, str], np.ndarray, bytes]:
    png = (db.storage / key).read_bytes()
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return {k: v for k, v in im.info.items() if isinstance(v, str)}, np.asarray(im.convert("RGB")), png


def median_at(pixels: np.ndarray, points: list[tuple[float, float]]) -> np.ndarray:
    return np.median([pixels[round(y), round(x)] for x, y in points], axis=0)


def test_every_page_paints_the_photos_profile(clean_db: Db, worker: WorkerProcess) -> None:
    # given a photo of a child and a pirate story (bare hands: the skin shows), sent by name
    photo = clean_db.photo(astronaut_png())
    story = clean_db.story(photo, name="Zoë", age=6, theme="pirates")
    external_send(BROKER, "stories.generate", {"story_id": story})
    row = clean_db.wait_story(story)
    assert row["status"] == "completed", row["error_message"]
    # then the analysis stored one profile per face, aligned with face_details.faces
    ph = clean_db.one("SELECT face_details, character_profile FROM photos WHERE id = :p", p=photo)
    stored = ph["character_profile"]
    assert stored["version"] == 1 and len(stored["faces"]) == len(ph["face_details"]["faces"]) == 1
    profile = CharacterProfile.from_json(stored["faces"][0])
    assert profile is not None and profile.hair_rgb is not None
    assert "Zoë" not in json.dumps(stored)
    # and every page records that profile and shows its hair and skin colours
    pages = clean_db.pages(story)
    assert len(pages) == PAGES
    hair_seen, skin_seen = [], []
    for p in pages:
        for key in (p["base_image_key"], p["personalized_image_key"]):
            text, pixels, png = page_image(clean_db, key)
            assert json.loads(text[PROFILE_KEY]) == stored["faces"][0], key
            anchor = read_anchor(png)
            assert anchor is not None
            hair = median_at(pixels, hair_sample_points(anchor.cx, anchor.cy, anchor.r))
            hands = json.loads(text[CHARACTER_KEY])["hands"]
            skin = median_at(pixels, [(x, y) for x, y, _ in hands])
            assert np.linalg.norm(hair - profile.hair_rgb) <= TOLERANCE, (key, hair, profile.hair_rgb)
            assert np.linalg.norm(skin - profile.skin_rgb) <= TOLERANCE, (key, skin, profile.skin_rgb)
            hair_seen.append(hair)
            skin_seen.append(skin)
    # and it is the same child on every page
    assert np.ptp(np.array(hair_seen), axis=0).max() <= TOLERANCE
    assert np.ptp(np.array(skin_seen), axis=0).max() <= TOLERANCE


def _two_faces() -> tuple[dict, dict]:
    """face_details (Rekognition's shape: an adult, then a child) and their profiles."""
    def face(left: float, size: float, low: int, high: int) -> dict:
        return {"bounding_box": {"left": left, "top": 0.1, "width": size, "height": size}, "confidence": 99.0,
                "landmarks": [], "attributes": {"age_range": {"low": low, "high": high}}}

    def profile(hair: tuple[int, int, int], skin: tuple[int, int, int], length: str) -> dict:
        return CharacterProfile(skin_rgb=skin, skin_tone="medium", hair_rgb=hair, hair_colour="brown",
                                hair_length=length).to_json()

    details = {"detector": "aws-rekognition", "image": {"width": 512, "height": 512}, "primary_face_index": 0,
               "faces": [face(0.1, 0.35, 30, 38), face(0.6, 0.25, 4, 7)], "small_faces": []}
    return details, {"version": 1, "faces": [profile((40, 30, 20), (200, 160, 130), "short"),
                                             profile((150, 60, 30), (120, 80, 60), "long")]}


@pytest.mark.slow  # a story started and two pages drawn in-process (~1 s)
def test_the_story_paints_its_chosen_face_and_clearing_face_data_clears_the_profile(clean_db: Db) -> None:
    from db.engine import autocommit
    from db.photos import clear_face_data
    from pipeline.stories import steps

    # given a photo already analysed with two faces, an adult's and a child's, each with a profile
    details, profiles = _two_faces()
    photo = clean_db.photo(astronaut_png())
    clean_db.exec("UPDATE photos SET ai_processing_status = 'completed', face_details = CAST(:d AS jsonb), "
                  "detected_labels = '[]', detected_objects = '[]', character_profile = CAST(:c AS jsonb) "
                  "WHERE id = :p", d=json.dumps(details), c=json.dumps(profiles), p=photo)
    story = clean_db.story(photo, age=6, theme="dinosaurs")
    # when the story starts (choosing the child's face by age) and a page is drawn
    pages = steps.generate_story(story).fanout
    chosen = clean_db.one("SELECT protagonist_face FROM story_outlines WHERE story_id = :s", s=story)
    assert chosen["protagonist_face"]["index"] == 1
    assert steps.write_text(pages[0]).outcome.name == "DONE"
    assert steps.draw_base(pages[0]).outcome.name == "DONE"
    # then the page shows the child's profile, not the adult's
    key = clean_db.one("SELECT base_image_key FROM story_pages WHERE id = :p", p=pages[0])["base_image_key"]
    text, _, _ = page_image(clean_db, key)
    assert json.loads(text[PROFILE_KEY]) == profiles["faces"][1]
    # and clearing the photo's face data clears the profile with it
    with autocommit() as c:
        assert clear_face_data(c, photo)
        assert not clear_face_data(c, "00000000-0000-0000-0000-000000000000")
    row = clean_db.one("SELECT face_details, character_profile, detected_labels FROM photos WHERE id = :p", p=photo)
    assert row["face_details"] is None and row["character_profile"] is None and row["detected_labels"] == []
    # and a page drawn afterwards carries no profile (nothing of the face is left to read)
    assert steps.write_text(pages[1]).outcome.name == "DONE"
    assert steps.draw_base(pages[1]).outcome.name == "DONE"
    key = clean_db.one("SELECT base_image_key FROM story_pages WHERE id = :p", p=pages[1])["base_image_key"]
    assert PROFILE_KEY not in page_image(clean_db, key)[0]
