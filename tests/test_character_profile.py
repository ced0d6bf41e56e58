"""The character profile (pipeline/providers/character.py, profile.py) on synthetic photos with a
known hair colour and length, skin colour and glasses, and how the offline painter and the image
prompt use it (the same child on every page)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.providers.base import BoundingBox, Face, Landmark, Outline, PageRequest, StoryRequest
from pipeline.providers.character import measure, profiles_from_photo
from pipeline.providers.offline_images import LocalIllustrator
from pipeline.providers.offline_images.anchor import CHARACTER_KEY, PROFILE_KEY, read_anchor
from pipeline.providers.offline_images.hair import hair_sample_points
from pipeline.providers.profile import CharacterProfile, hair_colour, skin_tone
from pipeline.providers.replicate_inputs import base_input
from tests.support import astronaut_png

pytestmark = pytest.mark.unit

W, H = 400, 480
# The face box of every synthetic photo: 160x180 px at (120, 120).
BOX = BoundingBox(120 / W, 120 / H, 160 / W, 180 / H)
BACKGROUND = (150, 190, 230)
DARK_BROWN = (70, 45, 30)
BLOND = (225, 190, 120)
LIGHT_SKIN = (240, 205, 180)
DARK_SKIN = (110, 72, 52)


def synthetic(skin: tuple[int, int, int], hair: tuple[int, int, int], length: str, glasses: bool) -> np.ndarray:
    """A flat-colour head: hair (cap, and a fall to the jaw or past the chin), skin, eyes, glasses."""
    im = Image.new("RGB", (W, H), BACKGROUND)
    d = ImageDraw.Draw(im)
    if length == "medium":
        d.rectangle((92, 100, 308, 255), fill=hair)
    elif length == "long":
        d.rectangle((92, 100, 308, 470), fill=hair)
    d.ellipse((90, 50, 310, 200), fill=hair)  # the cap, over the forehead and temples
    d.ellipse((120, 110, 280, 310), fill=skin)
    d.rectangle((140, 112, 260, 150), fill=hair)  # a fringe down to the box's top
    for x in (168, 232):
        d.ellipse((x - 10, 186, x + 10, 198), fill=(40, 30, 30))
    if glasses:
        for x in (168, 232):
            d.ellipse((x - 22, 170, x + 22, 214), outline=(25, 25, 30), width=4)
        d.line((190, 190, 210, 190), fill=(25, 25, 30), width=4)
    return np.asarray(im)


def face(**attributes: object) -> Face:
    return Face(BOX, 99.0, (Landmark("eyeLeft", 168 / W, 192 / H), Landmark("eyeRight", 232 / W, 192 / H)),
                dict(attributes))


def close(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int], tol: float = 12) -> bool:
    return float(np.linalg.norm(np.subtract(a, b, dtype=float))) <= tol


@pytest.mark.parametrize(("skin", "hair", "length", "glasses"), [
    (LIGHT_SKIN, DARK_BROWN, "short", False),
    (DARK_SKIN, (20, 18, 18), "medium", True),
    (LIGHT_SKIN, BLOND, "long", True),
    ((190, 140, 110), (170, 70, 35), "long", False),
])
def test_profile_measures_known_hair_skin_and_glasses(skin: tuple[int, int, int], hair: tuple[int, int, int],
                                                      length: str, glasses: bool) -> None:
    # given a photo painted with known colours, hair length and glasses
    # when the profile is measured for its face
    p = measure(synthetic(skin, hair, length, glasses), face())
    # then the colours are the painted ones, the words follow from them, and length and glasses match
    assert close(p.skin_rgb, skin, 3) and p.skin_tone == skin_tone(skin)
    assert p.hair_rgb is not None and close(p.hair_rgb, hair, 3)
    assert p.hair_colour == hair_colour(hair) and p.hair_length == length
    assert (p.glasses, p.glasses_source) == (glasses, "pixels")


def test_colour_words() -> None:
    assert [hair_colour(c) for c in ((20, 18, 18), DARK_BROWN, (140, 100, 60), BLOND, (170, 70, 35), (200, 200, 200))] \
        == ["black", "dark brown", "brown", "blond", "red", "white"]
    tones = [skin_tone(c) for c in (LIGHT_SKIN, (190, 140, 110), (150, 105, 75), DARK_SKIN, (60, 40, 30))]
    assert tones == ["light", "light-medium", "medium-brown", "brown", "dark-brown"]


def test_rekognition_eyeglasses_wins_over_pixels_and_bald_heads_have_no_hair() -> None:
    img = synthetic(LIGHT_SKIN, DARK_BROWN, "short", glasses=False)
    said = measure(img, face(eyeglasses={"value": True, "confidence": 97.5}))
    assert (said.glasses, said.glasses_source) == (True, "rekognition")
    unsure = measure(img, face(eyeglasses={"value": True, "confidence": 20.0}))
    assert (unsure.glasses, unsure.glasses_source) == (False, "pixels")
    # a head the colour of the skin above the face (no hair to measure): no hair in the profile
    bald = synthetic(LIGHT_SKIN, LIGHT_SKIN, "short", glasses=False)
    p = measure(bald, face())
    assert p.hair_rgb is None and p.hair_colour is None and "hair" not in p.descriptor()


def test_profile_json_round_trip_words_and_no_personal_fields() -> None:
    p = measure(synthetic(DARK_SKIN, (20, 18, 18), "medium", True), face(age_range={"low": 4, "high": 7}))
    stored = p.to_json()
    assert set(stored) == {"version", "hair", "skin", "glasses"}  # no name, age or gender: nothing to leak
    assert CharacterProfile.from_json(json.loads(json.dumps(stored))) == p
    assert p.descriptor() == "medium black hair, brown skin and glasses"
    for bad in (None, [], {"skin": {}}, {"skin": {"rgb": [1, 2], "tone": "x"}},
                {"skin": {"rgb": [300, 0, 0], "tone": "x"}}):
        assert CharacterProfile.from_json(bad) is None


def test_profiles_from_photo_align_with_the_faces() -> None:
    buf = io.BytesIO()
    Image.fromarray(synthetic(LIGHT_SKIN, DARK_BROWN, "long", False)).save(buf, "PNG")
    outside = Face(BoundingBox(0.999, 0.999, 0.0001, 0.0001), 90.0)
    stored = profiles_from_photo(buf.getvalue(), [face(), outside])
    assert stored["version"] == 1 and len(stored["faces"]) == 2 and stored["faces"][1] is None
    assert stored["faces"][0]["hair"]["length"] == "long"


@pytest.mark.slow
def test_astronaut_profile_is_plausible() -> None:
    from pipeline.providers.local_vision import LocalPhotoAnalyzer

    photo = astronaut_png()
    analysis = LocalPhotoAnalyzer().analyze_photo(photo)
    p = CharacterProfile.from_json(profiles_from_photo(photo, analysis.faces)["faces"][0])
    assert p is not None and p.hair_rgb is not None and not p.glasses
    assert p.skin_tone in ("light", "light-medium") and p.hair_colour in ("blond", "light brown", "brown")


def request(profile: CharacterProfile | None, page: int, theme: str = "pirates", name: str = "Mia") -> PageRequest:
    story = StoryRequest(name, 5, theme, 4, 42, profile)
    return PageRequest(story, Outline("t", tuple(f"{name} sails, beat {i}" for i in range(4))), page)


def painted(png: bytes) -> tuple[dict[str, str], np.ndarray]:
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return {k: v for k, v in im.info.items() if isinstance(v, str)}, np.asarray(im.convert("RGB"))


def median_at(pixels: np.ndarray, points: list[tuple[float, float]]) -> list[int]:
    return [int(v) for v in np.median([pixels[round(y), round(x)] for x, y in points], axis=0)]


def assert_painted_child(png: bytes, profile: CharacterProfile) -> None:
    """The page records ``profile`` and shows its hair and skin colours where the child is."""
    text, pixels = painted(png)
    assert json.loads(text[PROFILE_KEY]) == profile.to_json() and "Mia" not in text[PROFILE_KEY]
    anchor = read_anchor(png)
    assert anchor is not None and profile.hair_rgb is not None
    assert close(median_at(pixels, hair_sample_points(anchor.cx, anchor.cy, anchor.r)), profile.hair_rgb)
    hands = json.loads(text[CHARACTER_KEY])["hands"]
    assert hands, "the pirate's hands are bare"
    assert close(median_at(pixels, [(x, y) for x, y, _ in hands]), profile.skin_rgb)


@pytest.mark.slow
@pytest.mark.parametrize("theme", ["pirates", "dinosaurs", "underwater", "enchanted_forest"])
def test_offline_pages_paint_the_profile_on_every_page(theme: str) -> None:
    # given a story with a measured profile (red long hair, brown skin, glasses)
    profile = measure(synthetic(DARK_SKIN, (170, 70, 35), "long", True), face())
    ill = LocalIllustrator()
    photo = io.BytesIO()
    Image.fromarray(synthetic(DARK_SKIN, (170, 70, 35), "long", True)).save(photo, "PNG")
    for page in (1, 2, 3, 4):
        req = request(profile, page, theme)
        # when a page is drawn and personalized
        base = ill.draw_base(req)
        final = ill.personalize(base, photo.getvalue(), face(), req)
        # then both show the profile's hair and skin and record it, on every page
        assert_painted_child(base, profile)
        assert_painted_child(final, profile)


@pytest.mark.slow
def test_pages_without_a_profile_are_drawn_as_before() -> None:
    text, _ = painted(LocalIllustrator().draw_base(request(None, 1)))
    assert PROFILE_KEY not in text


def test_base_prompt_describes_the_profile_never_the_name() -> None:
    profile = CharacterProfile(skin_rgb=(150, 105, 75), skin_tone="medium-brown", hair_rgb=(70, 45, 30),
                               hair_colour="dark brown", hair_length="short", glasses=True)
    prompts = [base_input(request(profile, page, name="Mia"))["prompt"] for page in (1, 2, 3, 4)]
    words = "with short dark-brown hair, medium-brown skin and glasses,"
    assert all(words in p and "Mia" not in p for p in prompts)
    assert words not in base_input(request(None, 1))["prompt"]


def test_the_claim_picks_the_chosen_faces_profile_and_survives_odd_rows() -> None:
    from db.pages import _chosen_profile

    a, b = {"skin": {"rgb": [1, 2, 3], "tone": "light"}}, {"skin": {"rgb": [4, 5, 6], "tone": "brown"}}
    assert _chosen_profile({"profiles": [a, b], "chosen": 1, "primary": 0}) == b
    assert _chosen_profile({"profiles": [a, b], "chosen": None, "primary": 0}) == a  # an older story
    for odd in (None, "x", {"profiles": None, "chosen": 0}, {"profiles": [a], "chosen": 5},
                {"profiles": [a], "chosen": -1}, {"profiles": [a], "chosen": True}, {"profiles": ["x"], "chosen": 0},
                {"profiles": [a], "chosen": "0", "primary": None}):
        assert _chosen_profile(odd) is None
