"""An offline story writer: real, hand-written picture-book material per theme, no model.

How a story is made
-------------------
Every theme has a 24-slot story arc (opening, call to adventure, a companion, a quest,
challenges, a low point, the child's own clever or kind solution, the way home, good night).
Each slot has a *passage*: a list of simple sentences (ages 0-7), a list of rich sentences
(ages 8-14), a one-sentence gist of each, and a beat line for the outline/illustrator.

For ``page_count`` pages we keep the ``page_count`` most important slots (in arc order, so
page 1 is always the opening and the last page always the good-night ending). Every other
slot is folded into its nearest kept page as its gist sentence, so a 3-page story still has a
call to adventure and a solution, and a 24-page story gives every slot a page of its own.
A page's text is its slot's sentences (a prefix, so it reads as written) plus the folded
gists, sized to the age band's word range.

All choices (companion, quest, order of challenges, sights, style, title, page lengths) come
from ``random.Random`` seeded with the story's seed, so a story id always gives the same
story and every page can be written alone, on any worker, from (story, outline, page number).

The child is never given a pronoun (we don't know it): the text uses the name, and the
material avoids he/she/they altogether; a test keeps it that way.
"""
from __future__ import annotations

import logging
import random
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from pipeline.kernel.errors import PermanentStepError
from pipeline.stories.names import capitalize_name, title_with_name
from pipeline.providers.base import Outline, PageRequest, StoryRequest
from pipeline.stories.themes import THEMES, resolve_theme

log = logging.getLogger(__name__)

MIN_PAGES = 1
MAX_PAGES = 24


# --------------------------------------------------------------------------------------
# Age bands
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgeBand:
    """Words per page for an age range, and which register of sentences to use."""

    name: str
    min_words: int
    max_words: int
    rich: bool  # rich sentences (8+) or simple ones (0-7)


YOUNG = AgeBand("0-3", 15, 30, rich=False)
MIDDLE = AgeBand("4-7", 30, 60, rich=False)
OLDER = AgeBand("8-14", 60, 110, rich=True)


def age_band(age: int) -> AgeBand:
    """The band for an age; ages past 14 read the oldest band, a baby the youngest."""
    if age <= 3:
        return YOUNG
    if age <= 7:
        return MIDDLE
    return OLDER


# --------------------------------------------------------------------------------------
# Material structures
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """The text of one story slot, in both registers.

    ``simple``/``rich`` are sentences in reading order; a page uses a prefix of them, so
    each sentence may rely on the ones before it but never on the ones after.
    ``ending_*`` is a line always kept at the end (the good-night line).
    """

    beat: str
    gist_simple: str
    gist_rich: str
    simple: tuple[str, ...]
    rich: tuple[str, ...]
    ending_simple: str = ""
    ending_rich: str = ""


def _p(beat: str, gs: str, gr: str, s: str, r: str, es: str = "", er: str = "") -> Passage:
    """A passage from '|'-separated sentences (keeps the material below readable)."""
    return Passage(beat, gs, gr, tuple(s.split("|")), tuple(r.split("|")), es, er)


@dataclass(frozen=True)
class Companion:
    name: str
    a: str  # "a little silver robot"
    look: str  # simple: "with blue lights for eyes"
    look_rich: str
    arrive_rich: str  # "came rolling over the moon dust"
    sound: str  # what the companion says first, without quotes

    def facts(self) -> dict[str, str]:
        return {
            "comp": self.name,
            "comp_a": self.a,
            "comp_look": self.look,
            "comp_look_r": self.look_rich,
            "comp_arrive_r": self.arrive_rich,
            "comp_sound": self.sound,
        }


@dataclass(frozen=True)
class Quest:
    titles: tuple[str, ...]
    fixed_simple: str  # a sentence: what is put right ("The Moon Lantern shone again")
    fixed_rich: str  # a clause: the happy consequence, used after "Then ..."
    quest: Passage
    low: Passage
    solution: Passage


@dataclass(frozen=True)
class Kit:
    """Everything hand-written for one theme."""

    styles: tuple[str, ...]
    # world_s/r, pack_s/r, snack_s/r, rest_s/r, party_s/r, gift_s/r, night_s/r
    facts: dict[str, str]
    sights: tuple[tuple[str, str], ...]  # six (simple, rich) noun phrases
    companions: tuple[Companion, ...]
    quests: tuple[Quest, ...]
    opening: Passage
    call: Passage
    journey: Passage
    arrival: Passage
    challenges: tuple[Passage, ...]  # four
    home: Passage  # the way back


@dataclass(frozen=True)
class _Slot:
    key: str
    label: str  # shown at the start of the outline beat
    rank: int  # 1 = kept first when pages are few
    foldable: bool = True  # False: scenery only, dropped (not summarised) in short books


# The arc, in reading order. Ranks: the 12 most important make the default 12-page story
# (opening, call, companion, quest, three challenges, low point, solution, celebration,
# return, good night); the rest are added, in rank order, for longer books.
SLOTS: tuple[_Slot, ...] = (
    _Slot("opening", "Opening", 1),
    _Slot("call", "Call to adventure", 4),
    _Slot("prepare", "Getting ready", 24, foldable=False),
    _Slot("journey", "The journey", 13),
    _Slot("arrival", "Arrival", 18),
    _Slot("companion", "A new friend", 5),
    _Slot("quest", "The quest", 10),
    _Slot("wonder_a", "Wonders", 14, foldable=False),
    _Slot("challenge_1", "First challenge", 7),
    _Slot("rest", "A rest", 17, foldable=False),
    _Slot("challenge_2", "Second challenge", 8),
    _Slot("wonder_b", "More wonders", 19, foldable=False),
    _Slot("challenge_3", "Third challenge", 12),
    _Slot("wonder_c", "A quiet moment", 23, foldable=False),
    _Slot("challenge_4", "One more challenge", 22),
    _Slot("low_point", "Low point", 6),
    _Slot("remember", "Finding courage", 15),
    _Slot("solution", "The solution", 3),
    _Slot("celebration", "Celebration", 11),
    _Slot("gift", "A thank-you gift", 16),
    _Slot("farewell", "Farewell", 20),
    _Slot("return", "Return home", 9),
    _Slot("home_again", "Home again", 21, foldable=False),
    _Slot("closing", "Good night", 2),
)
assert len(SLOTS) == MAX_PAGES and sorted(s.rank for s in SLOTS) == list(range(1, MAX_PAGES + 1))


# --------------------------------------------------------------------------------------
# Generic passages (every theme), filled with the theme's facts
# --------------------------------------------------------------------------------------

_GENERIC: dict[str, Passage] = {
    "prepare": _p(
        "{name} packs a backpack for the adventure: {pack_s}",
        "{name} quickly packed {pack_s}.",
        "{name} quickly packed {pack_r}.",
        "{name} got ready fast.|Into the bag went {pack_s}.|“Ready!” said {name}.|Shoes on. "
        "Bag on.|Big smile on!|{name} gave the house a little wave goodbye.|Off went {name}, "
        "into {world_s}.|A big adventure was waiting!",
        "{name} did not waste a single second.|Into a small backpack went {pack_r}, because "
        "every good explorer knows that adventures can ask for surprising things.|{name} "
        "zipped the bag shut, pulled on sturdy shoes and stood up very tall.|Somewhere out "
        "there, somebody needed help, and {name} was going to give it.|With a heart beating "
        "fast and happy, {name} set off.",
    ),
    "companion": _p(
        "{name} meets {comp}, {comp_a} {comp_look}",
        "There {name} met {comp}, {comp_a}.",
        "There {name} met {comp}, {comp_a} {comp_look_r}, who wanted to help.",
        "Then {name} heard a voice: “{comp_sound}”|It was {comp}, {comp_a} {comp_look}.|"
        "“Hello, {name}!” said {comp}.|“Hello, {comp}!” said {name}.|“Can I come too?” asked "
        "{comp}.|“Yes, please!” said {name}.|Now {name} had a new friend.",
        "All at once, {name} heard a cheerful voice: “{comp_sound}”|{comp}, {comp_a} "
        "{comp_look_r}, {comp_arrive_r} and stopped right in front of {name}.|“You must be "
        "{name},” said {comp}, beaming. “I hoped you would come. I know every corner of "
        "{world_r}, and I would love to help.”|{name} held out a hand, and {comp} shook it very "
        "seriously.|From that moment on, the two were a team.",
    ),
    "wonder_a": _p(
        "{name} and {comp} explore and marvel at {sightA_s} and {sightB_s}",
        "{name} and {comp} saw {sightA_s}.",
        "On the way, {name} and {comp} marvelled at {sightA_r}.",
        "{name} and {comp} looked all around.|{name} saw {sightA_s}.|“Wow!” said {name}.|"
        "Then {name} saw {sightB_s}.|“Look!” said {comp}.|{name} waved hello.|What a "
        "wonderful place!|There was so much to see!|{name} wanted to remember it all.",
        "As {name} and {comp} went on, the world around grew stranger and more beautiful.|"
        "First {name} spotted {sightA_r}.|Then, a little further on, there was {sightB_r}.|"
        "{name} stood very still, trying to remember every detail to tell everyone at home.|"
        "“Is it always like this?” {name} whispered.|{comp} nodded proudly. “Every single "
        "day.”",
    ),
    "wonder_b": _p(
        "{name} and {comp} pass {sightC_s} and {sightD_s}",
        "{name} waved at {sightC_s}.",
        "{name} and {comp} hurried on, past {sightC_r}.",
        "On went {name} and {comp}.|“Look over there!” said {comp}.|{name} saw {sightC_s}.|"
        "Then {name} saw {sightD_s}!|{name} clapped and clapped.|“This is the best day "
        "ever,” said {name}.|“Me too!” said {comp}, with a happy little jump.",
        "On went {name} and {comp}, and there was something new to see around every corner.|"
        "Over there was {sightC_r}.|And there, just close enough to touch, was {sightD_r}.|"
        "{name} laughed out loud with delight.|“Nobody at home will ever believe this,” "
        "{name} said.|“Then you’ll just have to remember it very carefully,” said {comp} with "
        "a wink.",
    ),
    "wonder_c": _p(
        "{name} and {comp} stop to watch {sightE_s} and {sightF_s}",
        "{name} stopped to watch {sightE_s}.",
        "For a moment, {name} and {comp} stopped to watch {sightE_r}.",
        "{name} and {comp} stopped for a moment.|“Shh,” said {comp}. “Look.”|{name} saw "
        "{sightE_s}.|Then {name} saw {sightF_s}.|{name} smiled a big smile.|“So pretty,” "
        "whispered {name}.|The two friends sat quietly and watched for a long time.",
        "{name} and {comp} paused for a moment to catch a breath, and that was when the magic "
        "happened.|First came {sightE_r}.|Then, as if it had all been planned, there was "
        "{sightF_r}.|Neither friend said a word, because some things are too lovely for "
        "talking.|{name} tucked the moment away inside, like a treasure in a pocket, to keep "
        "forever.",
    ),
    "rest": _p(
        "{name} and {comp} rest {rest_s} and share {snack_s}",
        "{name} and {comp} stopped to share {snack_s}.",
        "{name} and {comp} rested {rest_r} and shared {snack_r}.",
        "{name} felt hungry.|Rumble, rumble, went {name_s} tummy.|“Snack time!” said {comp}.|"
        "{name} and {comp} sat {rest_s}.|The friends ate {snack_s}.|Yum, yum!|{name} felt "
        "strong again.|Then the two friends set off again, full and happy.",
        "After so much excitement, {name_s} tummy gave a loud rumble, and {comp} laughed.|So "
        "the two friends stopped to rest {rest_r}.|{comp} shared {snack_r}, and nothing had "
        "ever tasted quite so good.|While munching, {name} asked {comp} a hundred questions "
        "about {world_r}, and {comp} answered every single one.|When the last crumb was gone, "
        "{name} felt ready for anything.",
    ),
    "remember": _p(
        "{name} takes a slow, brave breath, thinks of home, and finds the courage to try again",
        "{name} took a deep breath and felt brave again.",
        "{name} took a slow, deep breath, thought of home, and felt courage glowing again.",
        "{name} sat down and took a big breath.|In... and out.|{name} thought of home.|{name} "
        "thought of a big warm hug.|{name} felt brave again.|“I can do this,” said {name}.|Brave "
        "hearts try again. So {name} stood up tall.",
        "{name} sat down for a moment and closed both eyes.|At home, whenever things felt too "
        "big, a slow breath always helped: in through the nose, out through the mouth.|So "
        "{name} breathed in slowly, and out again, and then once more.|{name} thought of home, "
        "of the warm kitchen and the people waiting there, and a little spark of courage began "
        "to glow inside.|When {name} opened both eyes, an idea was already waiting.",
    ),
    "celebration": _p(
        "{name}, {comp} and new friends celebrate: the day is saved",
        "Hooray! {q_fixed_s}!",
        "Then {q_fixed_r}, and everyone cheered for {name}.",
        "Hooray! Everyone cheered for {name}.|{q_fixed_s}.|{party_s}.|{comp} gave {name} a "
        "big hug.|“You did it, {name}!”|{name} felt so happy.|Everyone danced and laughed "
        "together.|It was the happiest day ever!",
        "For a moment, everything was perfectly still, and {name} held a breath.|Then "
        "{q_fixed_r}, and a great cheer went up all around.|{party_r}.|{comp} spun around in "
        "a circle of pure joy. “You did it, {name}! You really did it!”|{name} laughed until "
        "both cheeks ached. It felt wonderful to have helped.",
    ),
    "gift": _p(
        "{comp} gives {name} a thank-you gift: {gift_s}",
        "{comp} had a present for {name}: {gift_s}.",
        "To say thank you, {comp} gave {name} {gift_r}.",
        "{comp} had a present for {name}.|It was {gift_s}!|“To say thank you,” said {comp}.|"
        "“Thank you, {comp}!” said {name}.|{name} held it tight.|“I will keep it forever,” "
        "said {name}.|{name} put it in a pocket, safe and sound.",
        "Before it was time to leave, {comp} pressed something small into {name_s} hand.|It "
        "was {gift_r}.|“So you will always remember,” said {comp} softly, “how brave you were "
        "here, and how kind.”|{name} turned the gift over and over, then tucked it safely into "
        "a pocket.|“I’ll never forget,” {name} promised. “Not ever.”|It felt warm, as if it held "
        "a little piece of the adventure.",
    ),
    "farewell": _p(
        "{name} says goodbye to {comp} and all the new friends",
        "{name} hugged {comp} goodbye.",
        "{name} hugged {comp} goodbye and promised to remember everything.",
        "Then it was time for {name} to go home.|{name} gave {comp} a big hug.|“Goodbye, "
        "{comp}!” said {name}.|“Goodbye, {name}!” said {comp}.|“Will I see you again?” asked "
        "{name}.|“Whenever you dream,” said {comp}.|{name} waved and waved until {comp} was out "
        "of sight.",
        "All too soon, the light began to change, and {name} knew it was time to go home.|"
        "Saying goodbye was the hardest part of the whole adventure.|{name} hugged {comp} "
        "tightly, and {comp} hugged back even tighter.|“Will I ever see you again?” {name} "
        "asked.|“Whenever you close your eyes and remember,” said {comp}, “I’ll be right "
        "there. And you know the way now.”|{name} waved and waved until {comp} was out of "
        "sight.",
    ),
    "home_again": _p(
        "back at home, {name} looks at {gift_s} and remembers the adventure",
        "Back home, {name} smiled, remembering every moment.",
        "Back home, {name} smiled a secret smile, remembering every moment of the adventure.",
        "{name} was home again.|The house was warm and quiet.|{name} looked at {gift_s}.|Was "
        "it all a dream?|No! Here was the present.|{name} smiled a big smile.|“What an "
        "adventure,” whispered {name}.|"
        "Tomorrow there would be so much to tell!",
        "Back at home, everything was exactly as {name} had left it: the same warm kitchen, "
        "the same creaky stair, the same cosy smells.|For a moment, {name} wondered if it had "
        "all been a dream.|But there in {name_s} pocket was {gift_r}.|{name} held it up to "
        "the light and smiled a secret smile.|It had all been real, every single wonderful "
        "bit of it.",
    ),
}

# The good-night page has two versions; the last line is always kept.
_CLOSINGS: tuple[Passage, ...] = (
    _p(
        "{name} snuggles into bed, sleepy and happy; good night",
        "Back home, {name} snuggled into bed. Good night, {name}!",
        "That night, safe and snug at home, {name} fell asleep with a smile. Good night, brave "
        "{name}.",
        "Now it was bedtime for {name}.|{name} snuggled under the blanket.|{night_s}.|“Good "
        "night, {comp},” whispered {name}.|{name} thought about the big adventure and "
        "smiled.|Yawn! Eyes closed, slow and sleepy.|Sweet dreams.",
        "That night, {name} lay snug in bed, listening to the quiet of the house.|{night_r}.|"
        "Somewhere far away, {comp} was surely thinking of {name} too.|{name} yawned a great "
        "big yawn and smiled, because the best adventures are the ones you carry home in your "
        "heart.|And as sleep came, the whole world seemed to whisper: well done, brave {name}.",
        es="Good night, {name}.",
        er="Good night, {name}. Sleep well.",
    ),
    _p(
        "after a cuddle and warm milk, {name} climbs into bed and falls asleep; the end",
        "Home in bed, {name} fell asleep. Good night, {name}!",
        "That night, back home in bed, {name} fell into the deep, happy sleep of a true "
        "adventurer. Good night, {name}.",
        "After a cuddle and some warm milk, {name} climbed into bed.|{night_s}.|{name} gave a "
        "big yawn.|“What a day,” said {name}.|“I was brave, and I was kind,” whispered "
        "{name}.|Eyes closed. Sleepy head.",
        "After a cuddle and a mug of warm milk, {name} climbed into bed, tired all the way "
        "down to {name_s} toes.|{night_r}.|{name} thought about {comp}, and {world_r}, and how "
        "much bigger the world was than anyone knew.|“I was brave,” {name} whispered, “and I "
        "was kind.”|Then {name_s} eyes closed, and {name} slept the deep, happy sleep of a "
        "true adventurer.",
        es="Good night, {name}. The end.",
        er="Good night, {name}. The end.",
    ),
)


# --------------------------------------------------------------------------------------
# Theme material
# --------------------------------------------------------------------------------------

_SPACE = Kit(
    styles=(
        "soft watercolour, deep indigo night sky with warm golden starlight",
        "gouache picture-book painting, navy and tangerine palette, rounded friendly shapes",
        "pastel crayon texture, dreamy violet and silver palette",
    ),
    facts={
        "world_s": "space",
        "world_r": "the glittering, wide-open sky",
        "pack_s": "a torch, a banana and a warm scarf",
        "pack_r": "a torch, a banana, a star chart and a warm woolly scarf",
        "snack_s": "star-shaped pancakes",
        "snack_r": "warm star-shaped pancakes, still fizzing with stardust sugar",
        "rest_s": "on a soft moon rock",
        "rest_r": "on a smooth grey moon rock, with the whole galaxy spread out above like a "
        "glittering quilt",
        "party_s": "The planets spun and the comets danced",
        "party_r": "All across the sky, the planets spun like tops and the comets drew loops "
        "and swirls of silver light",
        "gift_s": "a tiny star in a jar",
        "gift_r": "a tiny star in a glass jar, glowing with a gentle golden light that never "
        "went out",
        "night_s": "Outside, the stars twinkled",
        "night_r": "Outside the window, the stars twinkled brightly, and one little star "
        "seemed to wink",
    },
    sights=(
        ("a planet with shiny rings",
         "a huge planet wearing rings of pink and golden ice that chimed softly, like bells"),
        ("a comet with a sparkly tail",
         "a comet sweeping past, trailing a tail of glitter a thousand miles long"),
        ("tiny moons playing tag",
         "a family of tiny moons playing tag around a sleepy blue planet"),
        ("shooting stars", "a shower of shooting stars that fizzed and crackled like lemonade"),
        ("a purple cloud of stardust",
         "a cloud of violet stardust where baby stars were being born, soft as candyfloss"),
        ("the Earth, small and blue",
         "the Earth far, far away, as small and blue as a marble, with white clouds swirling "
         "slowly across it"),
    ),
    companions=(
        Companion("Pip", "a little silver robot", "with blue lights for eyes",
                  "with round blue lights for eyes and a wobbly antenna",
                  "came rolling over the moon dust", "Beep-boop! Hello!"),
        Companion("Nova", "a moon fox", "with a sparkly tail",
                  "with fur as white as moonlight and a tail full of sparkles",
                  "came bounding over the craters", "Yip-yip! Hello!"),
        Companion("Zib", "a friendly green alien", "with three waving arms",
                  "with three waving arms and a smile as wide as a slice of melon",
                  "came floating down on a tiny spinning saucer", "Zib-zib, hooray!"),
    ),
    quests=(
        Quest(
            titles=("{name} and the Lost Light of the Moon", "{name} and the Moon Lantern",
                    "{name} and the Secret of the Silver Moon"),
            fixed_simple="The Moon Lantern shone again",
            fixed_rich="the baby stars, guided by the silver light, came twinkling home across "
            "the sky in a long, glittering line",
            quest=_p(
                "{comp} explains that the Moon Lantern has gone dark, so the baby stars cannot "
                "find the way home",
                "{comp} told {name} that the Moon Lantern had gone dark.",
                "{comp} explained that the Moon Lantern, which guides the baby stars home, had "
                "gone dark, and {name} promised to light it again.",
                "{comp} looked at {name} with a sad face.|“The Moon Lantern has gone dark,” "
                "said {comp}.|“Now the baby stars can’t find the way home.”|{name} looked up.|"
                "The sky was dark and quiet.|“I will help!” said {name}.|“Let’s go and find "
                "the Moon Lantern!”",
                "{comp} led {name} to the edge of a crater and pointed up at a dark patch of "
                "sky.|“Up there, on top of the tallest mountain on the Moon, stands the Moon "
                "Lantern,” said {comp}.|“Every night it shines, so the baby stars can find the "
                "way home to bed. But last night it went out, and nobody knows why.”|"
                "Somewhere in the darkness, a baby star gave a tiny, worried twinkle.|{name} "
                "stood up straight. “Then we’ll climb that mountain,” {name} said, “and light "
                "it again.”",
            ),
            low=_p(
                "at the top of the mountain the Moon Lantern is cold and dark; nothing works, "
                "and {name} feels small and far from home",
                "But the Moon Lantern was cold, and {name} felt sad.",
                "At the top of the mountain the Moon Lantern stood cold and dark, and nothing "
                "{name} tried would make it shine.",
                "At last, {name} found the Moon Lantern.|But it was cold.|It was dark.|{comp} "
                "pushed the button.|Nothing.|{name} tapped the glass.|Nothing.|{name} felt "
                "very small and far from home.|A tear rolled down {name_s} cheek.",
                "At last, {name} and {comp} reached the very top of the mountain, and there it "
                "was: the Moon Lantern, tall and beautiful, but as cold and dark as a winter "
                "night.|{comp} pressed every button and pulled every lever. Nothing happened.|"
                "{name} knocked on the glass and called out hello. Still nothing.|The baby "
                "stars huddled together in the darkness, blinking nervously.|Suddenly home "
                "seemed very far away, and {name} felt small and tired, and a single tear "
                "rolled down {name_s} cheek.",
            ),
            solution=_p(
                "{name} sees the glass is covered in moon dust, polishes it with the woolly "
                "scarf from home, and the Moon Lantern shines again",
                "{name} polished the dusty glass, and the Lantern shone!",
                "{name} noticed the glass was thick with moon dust, polished it with the woolly "
                "scarf from home, and the Moon Lantern blazed back to life.",
                "Then {name} looked closer.|The glass was dusty!|{name} took off a soft "
                "woolly scarf.|Rub, rub, rub.|Polish, polish, polish.|A little glow. Then a "
                "bigger glow.|The dust came off in little puffs.|Whoosh! The Moon Lantern shone "
                "bright!",
                "Then {name} wiped away the tear and looked again, more carefully this time.|"
                "The lantern wasn’t broken at all: its glass was covered in a thick grey coat "
                "of moon dust, so the light inside couldn’t get out.|{name} unwound the woolly "
                "scarf from home and began to polish, round and round, "
                "until both arms ached.|First a faint glimmer appeared, then a warm glow, and "
                "then, with a soft whoosh, silver light spilled across the whole sky.",
            ),
        ),
        Quest(
            titles=("{name} and the Little Lost Star", "{name} and the Star Who Fell"),
            fixed_simple="Twinkle shone high in the sky again",
            fixed_rich="Twinkle settled back into place in the Great Bear, and the whole sky "
            "twinkled a thank-you",
            quest=_p(
                "{comp} shows {name} a gap in the sky: a little star called Twinkle has fallen "
                "down and is lost",
                "{comp} said a little star called Twinkle was lost.",
                "{comp} showed {name} a gap in the sky where Twinkle, the smallest star, had "
                "fallen out, and {name} set off to find Twinkle.",
                "{comp} showed {name} a gap in the sky.|“A little star fell down,” said "
                "{comp}.|“The little star is called Twinkle.”|“Twinkle is lost and all "
                "alone.”|{name} looked at the empty space.|“We will find Twinkle,” said "
                "{name}.|“Come on!”",
                "{comp} pointed out a strange dark gap among the stars, and {name} looked up.|"
                "“That’s where Twinkle lives,” said {comp}. “Twinkle is the smallest star of "
                "all, and last night Twinkle slipped and tumbled all the way down to the "
                "Moon.”|{name} gasped. Without Twinkle, the Great Bear was missing the tip of "
                "its nose.|“Twinkle must be frightened,” {name} said. “Let’s find Twinkle and "
                "help Twinkle get home.”|And so the search began.",
            ),
            low=_p(
                "{name} finds Twinkle at the bottom of a deep crater, too dim and too frightened "
                "to fly",
                "{name} found Twinkle, too scared to fly.",
                "At last {name} found Twinkle at the bottom of a deep crater, too dim and too "
                "frightened to fly.",
                "At last {name} found Twinkle.|Twinkle was at the bottom of a deep, dark hole.|"
                "Twinkle was very dim.|“I can’t fly,” cried Twinkle.|“I’m too scared.”|{name} "
                "felt sad.|How could such a little star get home?",
                "At last, at the bottom of a deep, dark crater, {name} spotted a faint "
                "flicker.|It was Twinkle, curled up small, glowing no brighter than a birthday "
                "candle about to go out.|“I can’t fly any more,” Twinkle sniffed. “I’m too "
                "small and too scared, and the sky is so far away.”|{name} looked up at the "
                "distant gap among the stars, then down at the trembling little star, and felt "
                "a lump in {name_s} throat.|For a moment, nobody knew what to do.",
            ),
            solution=_p(
                "{name} cheers Twinkle on with kind words and a counting game until Twinkle "
                "glows bright and flies home",
                "{name} counted to ten, and Twinkle flew home!",
                "{name} sat beside Twinkle and counted slowly to ten, and with every number "
                "Twinkle glowed brighter, until Twinkle soared back into the sky.",
                "{name} sat down next to Twinkle.|“You are brave,” said {name}.|“Let’s count "
                "together. One, two, three!”|Twinkle glowed a bit.|“Four, five, six!”|Twinkle "
                "glowed more!|“Seven, eight, nine, TEN!”|Twinkle was shining bright now!|Whoosh! "
                "Up went Twinkle!",
                "{name} climbed carefully down into the crater and sat beside Twinkle.|“When "
                "I’m scared at home,” {name} said gently, “I count to ten, very slowly. Shall "
                "we try it together?”|So the two counted, one, two, three, and with every "
                "number Twinkle’s glow grew a little stronger.|By seven, Twinkle was shining "
                "like a lamp; by nine, like the sun on a summer morning.|On ten, Twinkle shot "
                "out of the crater in a shower of sparks and soared all the way home.",
            ),
        ),
    ),
    opening=_p(
        "{name} at home in the evening, gazing up at the stars through the bedroom window",
        "{name} loved the stars.",
        "{name} had always loved the night sky.",
        "{name} loved the stars.|Every night, {name} looked out of the window.|“Hello, "
        "stars!” said {name}.|{name} counted the stars: one, two, three!|The Moon smiled "
        "down.|{name} wished to fly up high.|“One day I will visit you,” whispered {name}.",
        "{name} had always loved the night sky.|Every evening, when the house grew quiet, "
        "{name} pressed a nose against the bedroom window and gazed up at the stars, counting "
        "as many as possible before getting too sleepy.|Some stars were bright and bold; "
        "others were so faint that only a sideways glance could catch the glimmer.|“I wonder "
        "what it’s like up there,” {name} whispered to the Moon.|And that night, for the very "
        "first time, the Moon seemed to whisper back.",
    ),
    call=_p(
        "a tiny silver rocket lands in the garden with a glowing invitation for {name}",
        "One night, a little silver rocket landed in {name_s} garden.",
        "One night, a little silver rocket landed in {name_s} garden, with a glowing "
        "invitation inside: space needed a brave and kind helper.",
        "Whoosh! A little silver rocket landed in {name_s} garden.|{name} ran outside in "
        "slippers.|A round door opened with a ding.|Out floated a glowing note.|It said: "
        "“Dear {name}, please come. Space needs your help!”|“Me?” said {name}. “Yes, "
        "please!”",
        "Just then, a streak of silver light zipped across the sky and landed, with a gentle "
        "bump, right in the middle of {name_s} garden.|It was a rocket, no bigger than a "
        "garden shed, humming softly and still warm from its journey.|{name} tiptoed outside, "
        "heart thumping.|A round door slid open, and a glowing card floated out and landed in "
        "{name_s} hands.|In swirly silver writing it said: “Dear {name}, the sky needs a brave "
        "and kind helper. Will you come?”|{name} did not need to think twice.",
    ),
    journey=_p(
        "{name} blasts off in the little rocket, zooming past the clouds into space",
        "{name} climbed in, and the rocket zoomed up into space.",
        "{name} climbed aboard, and with a rumble and a roar the little rocket blasted off "
        "into space.",
        "{name} climbed into the rocket.|Click went the seat belt.|Three, two, one... blast "
        "off!|Up, up, up went {name}!|Past the trees.|Past the clouds.|Into the dark, twinkly "
        "sky.|“Wheee!” shouted {name}.|Stars, stars, everywhere!|Far below, the Earth was round "
        "and blue.",
        "{name} climbed into the little rocket and buckled a seat belt that glowed like a "
        "firefly.|A soft voice counted down: “Three... two... one... blast off!”|With a rumble "
        "and a roar, the rocket leapt into the air.|The garden shrank to the size of a "
        "postage stamp, then the town became a sprinkle of lights, and soon the clouds were "
        "far below like a fluffy white sea.|{name} laughed out loud as the blue sky faded to "
        "velvety black and the stars came out all around.",
    ),
    arrival=_p(
        "the rocket lands softly on the silver Moon, and {name} takes the first bouncy steps",
        "The rocket landed on the Moon, and {name} bounced out.",
        "At last the rocket settled on the silvery dust of the Moon, and {name} stepped out "
        "for a first, bouncy look around.",
        "Bump! The rocket landed, and {name} stepped out onto the Moon.|Boing! {name} bounced "
        "up high.|Boing! Boing! Again!|The Moon was soft and silver.|The stars were so "
        "close.|“I am on the Moon!” said {name}.|Even the dust sparkled.",
        "With a gentle bump, the rocket settled onto the silvery dust of the Moon, and {name} "
        "stepped out.|The ground was soft and powdery, like icing sugar, and every footprint "
        "stayed perfectly still.|When {name} tried to walk, each step turned into a slow, "
        "floaty bounce, high enough to touch the sky.|Above hung more stars than anyone could "
        "ever count, and far away, the Earth glowed like a blue and white marble.|“I’m really "
        "here,” {name} breathed.",
    ),
    challenges=(
        _p(
            "{name} and {comp} dodge through a shower of tumbling space rocks",
            "{name} and {comp} zoomed past the space rocks.",
            "{name} spotted the gaps in a tumbling storm of space rocks and led the way safely "
            "through.",
            "{name} saw something ahead. Oh no, space rocks!|Big rocks and little rocks came "
            "tumbling by.|“Hold on!” said {comp}.|{name} watched carefully.|“Left!” called "
            "{name}. Whoosh!|“Right!” called {name}. Whoosh!|“Phew!” said {name}. “We made "
            "it!”|The rocks tumbled away behind the friends.",
            "Suddenly a rumble shook the air, and {name} saw a storm of space rocks tumbling "
            "straight towards the path.|Some were as small as marbles, others as big as "
            "houses, all spinning and bumping together.|“We’ll never get through!” cried "
            "{comp}.|But {name} watched closely and noticed something: the rocks moved in a "
            "pattern, and every few seconds a gap opened up.|“Wait... wait... now!” shouted "
            "{name}, and the two friends darted through gap after gap until the very last rock "
            "whizzed harmlessly past.",
        ),
        _p(
            "{name} and {comp} cross a field of giant craters with slow, floaty moon jumps",
            "{name} and {comp} jumped over the giant craters.",
            "{name} and {comp} crossed a field of deep craters in great, floating moon jumps.",
            "{name} and {comp} came to a field of giant holes.|Some were very deep.|“How do "
            "we get across?” asked {comp}.|{name} had an idea.|“Let’s jump like bunnies!”|"
            "Boing! Boing! Boing!|Over the holes went {name} and {comp}!",
            "Next, {name} and {comp} came to a vast field of craters, some so deep that nobody "
            "could see the bottom.|There was no bridge and no path around.|{comp} looked "
            "worried, but {name} remembered how light and bouncy it felt to walk on the "
            "Moon.|“If we jump softly and push off together, we’ll float right over,” {name} "
            "said.|Holding hands, the two friends counted to three and leapt, sailing over "
            "crater after crater in great slow arcs, laughing all the way.",
        ),
        _p(
            "a giant, gloomy star whale floats across the path, and {name} cheers it up with a "
            "silly joke",
            "{name} made a sad star whale laugh.",
            "{name} made a lonely star whale laugh with a silly joke, and the whale happily "
            "let the friends pass.",
            "{name} saw a giant whale, floating in space!|The star whale was very big.|The "
            "star whale was very sad.|It was in the way.|“What’s wrong?” asked {name}.|“Nobody "
            "talks to me,” said the whale.|So {name} told a funny joke.|The whale laughed and "
            "swam aside.",
            "{name} gasped: floating right across the path was an enormous star whale, as long "
            "as a train, with skin that shimmered like the night sky.|It gave a deep, sad "
            "sigh that rumbled through the stars.|“Excuse me,” {name} called up politely. "
            "“Are you alright?”|“Nobody ever stops to talk to me,” the whale sniffed. "
            "“Everyone is too busy being scared.”|So {name} told the whale the silliest joke "
            "ever heard in space, and the whale laughed so hard it turned a somersault, then "
            "happily let the friends pass.",
        ),
        _p(
            "{name} lights the way through a dark moon cave with a torch, and the walls sparkle",
            "{name} lit up a dark moon cave with a torch.",
            "{name} lit up a dark moon cave with the torch from home, and the walls sparkled "
            "like jewels.",
            "{name} and {comp} found a dark cave.|It was very dark inside.|“I don’t like the "
            "dark,” said {comp}.|{name} took out a little torch.|Click! Light!|The walls sparkled "
            "like sugar.|“It’s pretty!” said {comp}.|Hand in hand, the friends walked through.",
            "The only way forward led into a long, dark cave under a moon mountain, and {name} "
            "heard {comp} gulp.|“I’m not very fond of the dark,” {comp} admitted.|{name} "
            "reached into a pocket, pulled out a little torch and clicked it on.|At once the "
            "cave walls lit up, sparkling with crystals in every colour, like the inside of a "
            "giant jewel box.|“Oh!” said {comp}. “It’s not scary at all. It’s beautiful.”|Side "
            "by side, the two friends walked all the way through, taking turns to hold the "
            "torch.",
        ),
    ),
    home=_p(
        "{name} flies the little rocket back down to Earth and lands in the garden at home",
        "Then {name} flew the little rocket all the way home.",
        "Then the little rocket carried {name} back across the sky and landed softly in the "
        "garden at home.",
        "{name} climbed back into the rocket.|Three, two, one... blast off!|Down, down, down "
        "went the rocket.|Past the stars.|Past the clouds.|Bump! Home in the garden.|{name} "
        "waved to the sky.|“Goodbye, space!” whispered {name}.|The stars winked back.",
        "{name} climbed back into the little rocket, which hummed happily as it rose from the "
        "Moon.|This time {name} watched out of the window the whole way: the Moon shrinking to "
        "a silver coin, the Earth growing bigger and bluer, the clouds rushing up like soft "
        "pillows.|With the gentlest of bumps, the rocket landed back in the garden, exactly "
        "where it had started.|The door slid open, and {name} stepped out onto the cool, dewy "
        "grass, as quietly as possible, so as not to wake anybody.",
    ),
)

_UNDERWATER = Kit(
    styles=(
        "soft watercolour, turquoise and coral palette, dappled sunlight",
        "gouache picture-book painting, deep teal with bright reef colours",
        "gentle pastel colours, shimmering light rays and bubbles",
    ),
    facts={
        "world_s": "the sea",
        "world_r": "the shimmering world beneath the waves",
        "pack_s": "goggles, flippers and a jam sandwich",
        "pack_r": "a pair of goggles, bright green flippers, a jam sandwich and the big spiral "
        "shell from the beach",
        "snack_s": "sweet sea-grapes",
        "snack_r": "crunchy seaweed crackers and sweet, juicy sea-grapes",
        "rest_s": "in a giant clam shell",
        "rest_r": "in a giant open clam shell lined with sand as soft as velvet",
        "party_s": "The fish danced and the crabs clapped",
        "party_r": "The fish swirled in a rainbow parade, the crabs clacked like drums, and "
        "the seahorses twirled in circles",
        "gift_s": "a shiny pink pearl",
        "gift_r": "a pearl as pink as a sunrise, which hummed with the sound of the sea",
        "night_s": "Far away, the waves whispered",
        "night_r": "Far away, the waves whispered a lullaby on the shore",
    },
    sights=(
        ("jellyfish glowing like lanterns",
         "a drift of jellyfish glowing like paper lanterns, pink, blue and gold"),
        ("silver fish swimming all together",
         "a school of a thousand silver fish turning all at once, like one great flashing "
         "mirror"),
        ("an old ship covered in coral",
         "an old sunken ship, covered from end to end in coral flowers"),
        ("seahorses holding tails",
         "a family of seahorses holding tails, bobbing gently in the current"),
        ("a starfish as big as a table",
         "an orange starfish as big as a kitchen table, sunbathing in a beam of light"),
        ("a great whale singing",
         "a great blue whale gliding far above, singing a slow, deep song"),
    ),
    companions=(
        Companion("Shelly", "a sea turtle", "with a shell like a green umbrella",
                  "with a shell like a green umbrella and kind, wrinkly eyes",
                  "came paddling slowly out of the seaweed", "Hello-o-o there!"),
        Companion("Bubbles", "a baby octopus", "with eight curly arms",
                  "with eight curly arms and a face that changed colour with every mood",
                  "came zooming out from behind a rock", "Blub-blub! Hello!"),
        Companion("Marlo", "a friendly dolphin", "with a big happy grin",
                  "with a big happy grin and a fin that waved hello",
                  "came leaping and splashing through the water", "Eee-eee! Hello!"),
    ),
    quests=(
        Quest(
            titles=("{name} and the Lost Pearl of the Reef",
                    "{name} and the Secret of the Rainbow Reef"),
            fixed_simple="The reef was full of colour again",
            fixed_rich="the Great Pearl was back in its shell, and ripples of colour raced "
            "across the reef until every branch of coral glowed",
            quest=_p(
                "{comp} tells {name} that the Great Pearl that lights the reef has rolled "
                "away, and the colours are fading",
                "{comp} said the Great Pearl was lost.",
                "{comp} explained that the Great Pearl, which keeps the reef bright, had rolled "
                "away, and {name} promised to bring it home.",
                "{comp} showed {name} the reef.|“Look,” said {comp}. “The colours are going "
                "away.”|“Our Great Pearl is lost.”|“Without it, the reef turns grey.”|{name} "
                "looked. It was true!|“I will find the Great Pearl,” said {name}.|Off swam "
                "{name} and {comp}.",
                "{comp} swam {name} to the heart of the reef, where a great empty shell sat on "
                "a rock.|“This is where the Great Pearl lives,” said {comp} sadly. “Its light "
                "keeps the coral bright. But a storm rolled the pearl away, and now, bit by "
                "bit, the colours are fading.”|{name} looked around. At the edges, the coral "
                "had already turned a sad, dusty grey.|“Then we must bring the Great Pearl "
                "home,” said {name}, “before the colour is gone for good.”",
            ),
            low=_p(
                "{name} finds the Great Pearl trapped under a heavy rock in a dark trench; it "
                "won't budge, and {name} feels like giving up",
                "{name} found the Great Pearl, stuck under a big rock.",
                "Deep in a dark trench {name} found the Great Pearl, trapped beneath a rock far "
                "too heavy to move.",
                "At last {name} found the Great Pearl.|But it was stuck under a big, heavy "
                "rock!|{name} pushed. {comp} pushed.|The rock did not move.|{name} felt tired "
                "and sad.|“It’s too heavy,” said {name}.|Above, the reef grew a little greyer.",
                "Deep in a dark trench, {name} spotted a soft pink glow, and there it was: the "
                "Great Pearl, trapped beneath a huge, heavy rock.|{name} pushed with both "
                "hands. {comp} pushed too. The rock did not move even a tiny bit.|Again and "
                "again the friends tried, until {name} was puffed out and cross and ready to "
                "cry.|“It’s no use,” {name} said quietly. “We’re just too small.”|Above, the "
                "reef grew a little greyer.",
            ),
            solution=_p(
                "{name} uses a long plank from an old shipwreck as a lever, like a seesaw, and "
                "the pearl rolls free",
                "{name} used a plank like a seesaw. Out rolled the pearl!",
                "{name} used a plank from an old shipwreck as a lever, just like a seesaw, and "
                "the Great Pearl rolled free.",
                "Then {name} saw a long plank of old wood.|“Like a seesaw!” said {name}.|"
                "{name} put the plank under the rock.|One, two, three, PUSH!|Up went the "
                "rock.|“It works!” cheered {comp}.|Out rolled the Great Pearl!|The Great Pearl "
                "glowed, pink and gold.",
                "Then {name} spotted a long plank from an old shipwreck, half-buried in the "
                "sand, and remembered the seesaw at the playground.|“If I push one end down,” "
                "{name} thought, “the other end will lift up!”|So {name} slid one end of the "
                "plank under the rock, set a stone beneath the middle, and pressed down on the "
                "other end with all {name_s} might.|Slowly, slowly, the great rock tipped up, "
                "and out rolled the Great Pearl, glowing like a sunrise.",
            ),
        ),
        Quest(
            titles=("{name} and the Song of the Little Whale", "{name} and the Little Lost Whale"),
            fixed_simple="The little whale was home with Mama Whale",
            fixed_rich="Mama Whale came gliding out of the deep blue, and the little whale "
            "rushed to snuggle up close",
            quest=_p(
                "{comp} takes {name} to a crying baby whale who has lost Mama Whale, and {name} "
                "promises to help",
                "{comp} showed {name} a baby whale, lost and crying.",
                "{comp} took {name} to a baby whale who had lost Mama Whale, and {name} "
                "promised to help.",
                "{comp} took {name} to meet a baby whale.|The baby whale was crying.|“I can’t "
                "find my mama,” said the little whale.|{name} gave the whale a pat.|“Don’t "
                "worry,” said {name}.|“We will find your mama!”|The little whale smiled.",
                "{comp} led {name} to a quiet lagoon, where a baby whale, bigger than a bus but "
                "still very young, was crying great salty tears.|“I swam off to chase a shiny "
                "fish,” the little whale sobbed, “and now I can’t find my mama anywhere.”|"
                "{name} stroked the whale’s smooth grey nose. “Don’t worry,” {name} said. “The "
                "sea is big, but we’re clever, and we’ll find your mama together.”|The little "
                "whale gave a wobbly smile.",
            ),
            low=_p(
                "the ocean is huge and empty; there is no sign of Mama Whale, and everyone "
                "feels lost",
                "But the sea was so big. Where was Mama Whale?",
                "{name} searched everywhere, but the ocean was enormous and Mama Whale was "
                "nowhere to be seen.",
                "{name} looked and looked.|No Mama Whale.|The sea was so big.|The little whale "
                "cried again.|{name} felt sad too.|“Where can Mama be?” said {name}.|{comp} "
                "looked left. {name} looked right.|Still no Mama.|The little whale gave a big, "
                "sad sigh.",
                "{name} searched everywhere: behind the kelp, beneath the cliffs, even inside "
                "the old shipwreck.|But the ocean was enormous, and Mama Whale was nowhere to "
                "be seen.|The little whale stopped swimming and sank down onto the sand. “I’ll "
                "never find Mama,” came a tiny whisper.|Even {comp} was quiet.|{name} felt a "
                "heavy, sad feeling, like a stone in {name_s} tummy.|The little whale’s song had "
                "gone quiet, and the whole sea seemed to be waiting.",
            ),
            solution=_p(
                "{name} remembers that whales sing to each other and uses the big spiral shell "
                "to make the little whale's song loud; Mama Whale sings back",
                "The little whale sang through {name_s} shell. Mama sang back!",
                "{name} remembered that whales call to each other by singing, and made the "
                "little whale’s song ring out through the big spiral shell, until Mama Whale "
                "answered.",
                "Then {name} had an idea.|“Whales can sing!” said {name}.|“Sing to your "
                "mama!”|The little whale sang into {name_s} big shell.|The song went far, far "
                "away.|Everyone listened, very still.|Then, far away, a big voice sang back!",
                "Then {name} remembered something: whales call to each other with songs that "
                "can travel for miles across the ocean.|“Sing for your mama!” {name} said, and "
                "held up the big spiral shell from the beach, like a trumpet.|The little whale "
                "sang into the shell, and the song came out the other side louder and "
                "stronger, rolling away through the water.|Everyone waited, very still.|And "
                "then, from far, far away, came an answering song, deep and warm.",
            ),
        ),
    ),
    opening=_p(
        "{name} on the beach at sunset, collecting shells and listening to the sea in a big "
        "spiral shell",
        "{name} loved the sea.",
        "{name} loved the sea more than almost anything.",
        "{name} loved the sea.|{name} liked to find shells on the beach.|Little shells. Pink "
        "shells. Stripy shells.|One day, {name} found a big spiral shell.|{name} held it up to "
        "listen.|Swish, swoosh, went the sea inside.",
        "{name} loved the sea more than almost anything.|Every day at the beach, {name} hunted "
        "along the waterline for treasures: striped shells, smooth green sea glass, and once a "
        "crab’s old coat, as light as paper.|The best find of all was a big spiral shell, "
        "creamy white outside and pink as a sunrise inside.|When {name} held it close and "
        "listened, it was full of the sound of the waves, rushing and whispering, as if the "
        "whole ocean lived inside.",
    ),
    call=_p(
        "a tiny voice calls from inside the spiral shell, asking {name} to come under the sea",
        "A tiny voice in the shell called, “Help us, {name}!”",
        "One evening, a tiny voice called out of the spiral shell, asking {name} to come and "
        "help the creatures of the sea.",
        "That evening, {name} heard something new in the shell.|A tiny voice!|“Help! Help!” "
        "said the voice.|“Please come, {name}. The sea needs you!”|{name} ran down to the "
        "water.|The little waves were glowing blue.|“I’m coming!” called {name}.",
        "That evening, as the sun sank into the water, {name} lifted the shell again and heard "
        "something new.|Beneath the swish of the waves, a tiny voice was calling.|“Hello? Is "
        "that {name}? Please, please come. We need a helper, and the sea says you are the "
        "kindest one it knows.”|{name} ran down to the water’s edge, where the little waves "
        "had begun to glow a soft, magical blue, as though lighting a path.",
    ),
    journey=_p(
        "{name} steps into a giant shimmering bubble that sinks gently down beneath the waves",
        "A magic bubble took {name} under the waves.",
        "{name} stepped into a shimmering magic bubble, which carried {name} gently down "
        "beneath the waves.",
        "{name} saw a big, shiny bubble on the sand.|{name} stepped inside.|Down, down, down "
        "went the bubble.|Under the waves!|Fish swam by and waved.|{name} could breathe, and "
        "see, and smile!|It was magic!|Down, down, to the sandy sea floor.",
        "{name} saw a shimmering bubble, as big as a wardrobe, roll up out of the waves and "
        "stop right at {name_s} feet.|{name} stepped inside, and the bubble closed with a soft "
        "pop.|Gently it rolled back into the water and began to sink, down through the green "
        "and gold light.|Inside, the air was fresh and sweet, and {name} could see everything: "
        "little fish peeping in, ribbons of sunlight, and far below, the sea floor glowing "
        "with colour.",
    ),
    arrival=_p(
        "{name} arrives at a bright coral reef full of colourful fish",
        "{name} landed by a bright coral reef.",
        "The bubble settled beside a coral reef so colourful that {name} could hardly believe "
        "it.",
        "The bubble landed on soft sand, and {name} looked around.|There was coral: red, "
        "yellow, purple!|Fish of every colour swam by.|A crab waved a claw.|“Hello!” said "
        "{name}.|“Hello!” said the crab.|What a happy place!|The fish swam in and out of the "
        "coral.",
        "The bubble settled on the soft white sand, and {name} gazed out at the most colourful "
        "place imaginable.|A coral reef stretched in every direction, branching like trees and "
        "blooming like flowers, in scarlet, lemon and violet.|Fish darted between the "
        "branches: striped ones, spotted ones, and one that looked exactly like a tiny "
        "banana.|A crab tipped an imaginary hat. “Welcome to the Rainbow Reef,” the crab said. "
        "“We’ve been waiting for you, {name}.”",
    ),
    challenges=(
        _p(
            "{name} and {comp} find the way through a tangled kelp forest by following a ray of "
            "sunlight",
            "{name} followed the sunshine out of the tall kelp.",
            "{name} found the way out of a tangled kelp forest by following a single ray of "
            "sunlight.",
            "{name} and {comp} came to a kelp forest.|The kelp was tall and wavy.|It was easy "
            "to get lost!|{name} looked up.|“Follow the sunshine!” said {name}.|Up and out swam "
            "the friends!|The water was clear and blue again.",
            "{name} and {comp} came to a forest of kelp so tall and thick that the water turned "
            "green and dim.|The long ribbons swayed and tangled, and soon every direction "
            "looked exactly the same.|“I think we’re going round in circles,” {comp} said "
            "nervously.|{name} looked up and noticed a single bright ray of sunlight slanting "
            "down through the leaves.|“The light shows the way out,” said {name}. “Let’s "
            "follow it.”|And sure enough, the friends swam out into clear blue water.",
        ),
        _p(
            "a grumpy hermit crab guards a narrow gap; {name} finds the crab a bigger shell",
            "{name} found a grumpy crab a bigger shell.",
            "{name} saw that a grumpy hermit crab’s shell was far too small, found a roomy new "
            "one, and the crab let the friends pass.",
            "{name} met a grumpy crab by a little gap.|“Go away!” snapped the crab.|{name} "
            "looked closer.|The crab’s shell was too small.|{name} found a bigger shell.|The "
            "crab smiled. “Thank you! You may pass.”|The crab waved a happy claw.",
            "At a narrow gap between two rocks, {name} met a very grumpy hermit crab.|“Nobody "
            "passes!” snapped the crab, waving both claws.|But {name} noticed something: the "
            "crab’s shell was far too small, and pinched so much that the poor thing could "
            "hardly move.|“No wonder you’re grumpy,” {name} said kindly, and searched the sand "
            "until a roomy new shell turned up.|The crab wriggled in, sighed with happiness, "
            "and stepped aside. “You may pass,” said the crab, “and thank you.”",
        ),
        _p(
            "a swirling current pulls at {name} and {comp}, and {name} leads the way out by "
            "swimming sideways",
            "{name} swam out of a swirly current.",
            "Caught in a swirling whirlpool, {name} remembered to swim sideways, across the "
            "current, and led {comp} out to calm water.",
            "{name} felt the water pull and pull.|A swirly current!|Round and round went "
            "{comp}.|“Swim to the side!” called {name}.|{name} and {comp} swam to the side.|"
            "Out of the swirl. Phew!|“You saved me!” said {comp}, with a big hug.",
            "Without warning, {name} felt the water begin to tug, then pull, then swirl, faster "
            "and faster.|It was a whirlpool, spinning like water going down a giant plughole, "
            "and {comp} was being carried round and round.|{name} remembered what the "
            "lifeguard at the beach always said: never fight a current head-on; swim across "
            "it, to the side.|“This way!” called {name}, grabbing {comp} and swimming sideways "
            "with strong, steady kicks.|A moment later the friends burst out into calm, still "
            "water.",
        ),
        _p(
            "in a pitch-dark cave, {name} hums a song and glowing jellyfish come to light the "
            "way",
            "{name} hummed, and glowing jellyfish lit the dark cave.",
            "In a pitch-dark cave, {name} hummed a song from home, and glowing jellyfish "
            "drifted close to light the way.",
            "{name} and {comp} swam into a dark cave.|It was very, very dark.|{name} hummed a "
            "little song.|Then, glow, glow, glow!|Jellyfish came to listen.|The jellyfish lit "
            "up the way.|Out of the cave swam the friends.|“Thank you, jellyfish!” called {name}.",
            "The path led {name} and {comp} into an underwater cave as dark as the inside of a "
            "pocket.|{comp} trembled. “I can’t see a thing.”|To feel braver, {name} began to "
            "hum a soft little song from home.|One by one, tiny lights appeared in the "
            "darkness: jellyfish, drifting closer to listen, each one glowing pink and blue and "
            "gold.|With the jellyfish bobbing around like lanterns, the friends swam safely "
            "through to the other side.",
        ),
    ),
    home=_p(
        "the bubble carries {name} back up through the waves to the moonlit beach",
        "Then the bubble took {name} back to the beach.",
        "Then the shimmering bubble carried {name} back up through the waves to the moonlit "
        "beach.",
        "{name} stepped into the big bubble again.|Up, up, up it went.|Pop! Out on the "
        "beach!|The sand was cool.|The moon was shining.|{name} was home.|The big shell was "
        "still in {name_s} hand.|Inside, the sea whispered, “Thank you!”",
        "{name} stepped back into the shimmering bubble, which rose gently up through the "
        "water, past the reef, past the kelp, up towards the silver light of the moon.|With a "
        "soft pop, it burst on the sand, and {name} was standing on the beach once more, dry "
        "as a biscuit, with the big spiral shell tucked under one arm.|The waves rolled in and "
        "out, whispering, as {name} walked home up the moonlit path.",
    ),
)

_FOREST = Kit(
    styles=(
        "soft watercolour, mossy greens and golden light",
        "storybook gouache, warm autumn palette with glowing mushrooms",
        "delicate coloured-pencil texture, misty greens and lilac",
    ),
    facts={
        "world_s": "the forest",
        "world_r": "the whispering, magical woods",
        "pack_s": "a lantern, an apple and some seeds",
        "pack_r": "a little lantern, a shiny red apple, a pocketful of sunflower seeds and a "
        "shiny silver button",
        "snack_s": "blackberries and honey cake",
        "snack_r": "wild blackberries and warm honey cakes from the bees",
        "rest_s": "on soft green moss",
        "rest_r": "on a bed of moss as soft as a pillow, under a ceiling of whispering leaves",
        "party_s": "The flowers sang and the fireflies danced",
        "party_r": "The bluebells rang like tiny bells, the fireflies twirled in spirals, and "
        "every tree shook its leaves like a tambourine",
        "gift_s": "a little golden acorn",
        "gift_r": "a golden acorn, warm to the touch, which might one day grow into a wishing "
        "tree",
        "night_s": "Outside, the old oak tree rustled",
        "night_r": "Outside, the old oak tree rustled softly, as if saying good night",
    },
    sights=(
        ("mushrooms that glowed like lamps",
         "a ring of mushrooms glowing like little lamps, in blue and lilac"),
        ("a rabbit in a tiny hat",
         "a rabbit in a tiny knitted hat, hurrying somewhere important"),
        ("a silver waterfall", "a waterfall of silver water that tinkled like a music box"),
        ("flowers that sang", "a meadow of flowers humming a soft song in the breeze"),
        ("a deer with rainbow antlers",
         "a gentle deer whose antlers shimmered with every colour of the rainbow"),
        ("fireflies making shapes",
         "a swirl of fireflies drawing shapes in the air: a heart, a star, a smiling moon"),
    ),
    companions=(
        Companion("Hazel", "a little owl", "with big round eyes",
                  "with big round golden eyes and soft speckled feathers",
                  "came fluttering down from a branch", "Hoo-hoo! Hello!"),
        Companion("Bramble", "a hedgehog", "with a tiny red scarf",
                  "with a tiny red scarf and a nose that never stopped twitching",
                  "came trundling out of a pile of leaves", "Snuffle-snuffle! Hello!"),
        Companion("Flick", "a tiny fairy", "with shiny dragonfly wings",
                  "with shimmering dragonfly wings and a dandelion-fluff hat",
                  "came zipping out of a bluebell", "Ting-a-ling! Hello!"),
    ),
    quests=(
        Quest(
            titles=("{name} and the Silver Bell", "{name} and the Secret of the Whispering Woods"),
            fixed_simple="The Silver Bell rang, and the flowers woke up",
            fixed_rich="the Silver Bell rang out from its wooden arch, and all over the forest "
            "the flowers opened wide and turned towards the sun",
            quest=_p(
                "{comp} explains that the Silver Bell that wakes the flowers is missing, and "
                "the forest is growing sleepy",
                "{comp} said the Silver Bell was missing.",
                "{comp} explained that the Silver Bell, which wakes the flowers every morning, "
                "had vanished, and {name} promised to find it.",
                "{comp} looked worried, so {name} asked why.|“The Silver Bell is gone,” said "
                "{comp}.|“The bell wakes up the flowers.”|“Now the flowers are sleepy.”|{name} "
                "looked. The flowers were closed up tight.|“I will help find the bell!” said "
                "{name}.",
                "{comp} led {name} to a little wooden arch where an empty hook swung in the "
                "breeze.|“Every morning, the Silver Bell rings here, and all the flowers of the "
                "forest wake up,” explained {comp}. “But three days ago, it vanished.”|{name} "
                "looked around. It was true: the flowers stayed closed up tight, the bees "
                "drooped, and the whole forest seemed to yawn.|“Then we’ll find the Silver "
                "Bell,” {name} said firmly, “and wake the forest up again.”",
            ),
            low=_p(
                "{name} finds the Silver Bell in a magpie's nest at the top of the tallest "
                "tree, but the magpie will not give it back",
                "A magpie had the bell. “Mine!” it told {name}.",
                "{name} found the Silver Bell at the top of the tallest tree, guarded by a "
                "magpie who refused to give it back.",
                "At last {name} saw the Silver Bell.|It was in a big nest, high up.|A magpie "
                "sat on it.|“Mine!” said the magpie.|“Go away!”|{name} felt sad.|The flowers "
                "would stay "
                "asleep.|Even {comp} looked sad.|What could {name} do?",
                "At last, at the very top of the tallest tree, {name} spotted something "
                "shining: the Silver Bell, tucked into a big, messy nest.|On top of it sat a "
                "magpie, guarding it fiercely.|“It’s mine!” squawked the magpie. “I found it, "
                "and I’m keeping it. Go away!”|{comp} tried asking nicely. {name} tried "
                "explaining about the sleepy flowers. But the magpie only turned away with a "
                "sulky flick of its tail.|{name} sat down on a branch, feeling hopeless.",
            ),
            solution=_p(
                "{name} sees that the magpie is lonely, offers friendship and a shiny silver "
                "button, and the magpie gives back the bell",
                "{name} made friends with the magpie and got the bell.",
                "{name} saw that the magpie was lonely, offered friendship and a shiny silver "
                "button, and the magpie gladly gave back the Silver Bell.",
                "Then {name} looked at the magpie again.|The magpie looked lonely.|“Do you "
                "want a friend?” asked {name}.|{name} gave the magpie a shiny button.|The "
                "magpie smiled.|The magpie gave a happy hop.|“Here is the bell,” said the magpie.",
                "Then {name} noticed something: the nest was full of shiny things, but there "
                "was nobody to share the treasures with.|“Are you lonely?” {name} asked "
                "gently.|The "
                "magpie’s feathers drooped. “Nobody ever visits me,” came a whisper.|So "
                "{name} took a shiny silver button from a pocket and held it out. “This "
                "is for you. And I’ll be your friend, bell or no bell.”|The magpie blinked, "
                "then carefully pushed the Silver Bell across the nest to {name}.",
            ),
        ),
        Quest(
            titles=("{name} and the Secret of the Silver Stream", "{name} and the Thirsty Forest"),
            fixed_simple="The stream splashed and sparkled again",
            fixed_rich="the Silver Stream came leaping and laughing down the hill, and all the "
            "thirsty animals drank",
            quest=_p(
                "{comp} shows {name} that the Silver Stream has stopped flowing and the animals "
                "are thirsty",
                "{comp} said the stream had stopped. The animals were thirsty.",
                "{comp} showed {name} that the Silver Stream had dried to a trickle, and "
                "{name} set off uphill to find out why.",
                "{comp} took {name} to the stream.|But there was no water!|“The stream has "
                "stopped,” said {comp}.|“The animals are thirsty.”|A little rabbit looked "
                "sad.|“Let’s find out why,” said {name}.|Up the hill went {name} and {comp}, "
                "following the dry stream.",
                "{comp} led {name} to a stream bed of smooth pebbles, but instead of water there "
                "was only a muddy trickle.|“This is the Silver Stream,” said {comp}. “It gives "
                "water to every creature in the forest. But yesterday it just... stopped.”|"
                "Nearby, a family of rabbits licked the last drops from a leaf, and a frog sat "
                "sadly in a dry puddle.|“Something must be blocking it,” {name} said "
                "thoughtfully. “Let’s follow the stream up the hill and find out what.”",
            ),
            low=_p(
                "at the spring, a heap of branches and a boulder block the water; it is far too "
                "heavy for {name} and {comp}",
                "A big rock blocked the water. Too heavy for {name}!",
                "At the top of the hill {name} found the spring blocked by fallen branches and "
                "a boulder, far too heavy to shift.",
                "At the top of the hill, {name} found the spring.|Big branches were in the "
                "way.|A big rock was in the way.|{name} pulled and pulled.|It was too heavy.|"
                "{name} sat down and sighed.|The thirsty forest waited.",
                "At the top of the hill {name} found the spring, and the problem: a great "
                "tangle of fallen branches, wedged tight with a round grey boulder.|Behind it, "
                "the water was trapped, gurgling crossly.|{name} tugged at one branch, then "
                "another. {comp} pushed at the boulder. Nothing budged.|“It’s too big for us,” "
                "{name} said, and felt a hot prickle of tears.|The trapped water gurgled "
                "again, and the thirsty forest waited.",
            ),
            solution=_p(
                "{name} calls all the forest animals to help; pulling together like a "
                "tug-of-war, everyone clears the spring",
                "Everyone pulled with {name}, and the water ran free!",
                "{name} called every animal in the forest to help, and pulling together like a "
                "tug-of-war team, the friends set the water free.",
                "Then {name} had an idea.|“Let’s ask everyone to help!”|The rabbits came. The "
                "badgers came.|The deer came too.|Everyone pulled together.|“One, two, three, "
                "PULL!” called {name}.|The rock began to wobble.|Crack! Splash! The "
                "water was free!",
                "Then {name} had an idea. “Nobody can do it alone,” {name} said, “but maybe "
                "everybody can do it together!”|So {name} called out across the forest, and "
                "the animals came: rabbits and badgers, squirrels and deer, even a very sleepy "
                "bear.|{name} showed everyone how to hold on in one long line, just like a "
                "tug-of-war at school.|“One, two, three, PULL!”|With a crack and a rumble, the "
                "branches came free, and the boulder rolled away with a splash.",
            ),
        ),
    ),
    opening=_p(
        "{name} in the garden at home, building tiny twig houses for fairies beneath the old "
        "oak tree",
        "{name} loved the old oak tree in the garden.",
        "{name} loved to build tiny fairy houses under the old oak tree.",
        "{name} loved the old oak tree in the garden.|{name} made tiny houses under it.|Twig "
        "houses. Leaf houses.|“For the fairies,” said {name}.|{name} never saw a fairy.|But "
        "{name} kept on hoping.|Maybe one day a fairy would come.",
        "{name} had a favourite place in the whole world: under the old oak tree at the bottom "
        "of the garden.|There, among the roots, {name} built tiny houses out of twigs, with "
        "leaf roofs and pebble paths and doors made of bark.|“These are for the fairies,” "
        "{name} explained to anyone who asked.|Nobody had ever actually seen a fairy in the "
        "garden.|But {name} believed, and kept building anyway, just in case.",
    ),
    call=_p(
        "a tiny glowing door appears in the roots of the old oak, with a note inviting {name} "
        "into the Enchanted Forest",
        "A tiny magic door opened for {name}.",
        "One morning, a tiny glowing door appeared among the oak’s roots, with a note asking "
        "{name} to help the Enchanted Forest.",
        "One morning, {name} saw a tiny door in the oak tree.|It was glowing!|There was a "
        "note on it.|“Dear {name}, the forest needs a friend. Please come in!”|{name} touched "
        "the door.|It opened wide.|Inside, a little path sparkled.",
        "One misty morning, {name} found something new among the roots of the oak tree: a "
        "little round door, painted green, with light glowing around its edges.|Pinned to it "
        "was a note, written in tiny curly letters.|“Dear {name}, thank you for all the lovely "
        "houses. The Enchanted Forest needs a friend with a kind heart. Please knock three "
        "times.”|{name} took a deep breath, knocked once, twice, three times, and the little "
        "door swung open.",
    ),
    journey=_p(
        "{name} shrinks to fairy size and walks through the door along a path of glowing "
        "stones",
        "{name} shrank to fairy size and stepped through the door.",
        "{name} stepped through the door, shrank to fairy size, and followed a path of "
        "glowing stones into the forest.",
        "{name} stepped through the little door.|Whoosh! {name} became tiny!|The grass was as "
        "tall as trees.|A path of shiny stones led on.|{name} followed the path.|On and on, "
        "into the forest!|Big butterflies flew by, like kites.",
        "As {name} stepped through the door, the world seemed to stretch and swirl, and "
        "suddenly every blade of grass was as tall as a tree.|{name} had shrunk to fairy "
        "size!|A path of glowing stones wound away between giant mushrooms and ferns, and the "
        "air smelled of honey and rain.|Butterflies as big as kites drifted overhead.|Laughing "
        "with surprise, {name} set off along the path, deeper and deeper into the forest.",
    ),
    arrival=_p(
        "{name} reaches the heart of the Enchanted Forest, where the trees whisper and flowers "
        "ring like bells",
        "In the forest, the trees whispered, “Hello, {name}!”",
        "{name} reached the heart of the Enchanted Forest, where the ancient trees whispered a "
        "welcome.",
        "{name} came to the middle of the forest.|The trees were very old.|The trees "
        "whispered, “Hello!”|The flowers rang like bells.|{name} laughed.|It was magic!|A little "
        "bird sang hello.|{name} sang hello back!|The whole forest seemed to smile.",
        "At last {name} came to a clearing where the oldest trees in the world stood in a "
        "great circle, with branches woven together overhead like a roof.|As {name} walked "
        "in, the trees began to whisper, passing a welcome from leaf to leaf.|Tiny flowers "
        "turned to look and rang like bells.|Somewhere a woodpecker tapped out a happy "
        "rhythm.|“Welcome, {name},” sighed the wind. “Welcome to the Enchanted Forest.”",
    ),
    challenges=(
        _p(
            "a sleepy troll under a bridge asks {name} a riddle before letting the friends "
            "cross",
            "{name} answered a sleepy troll’s riddle and crossed the bridge.",
            "{name} answered a sleepy bridge troll’s riddle, and the troll chuckled and let "
            "the friends cross.",
            "{name} and {comp} came to a little bridge.|A sleepy troll lived under it.|“Answer "
            "my riddle!” said the troll.|“What has a trunk but is not an elephant?”|“A tree!” "
            "said {name}.|The troll laughed. “Cross, then!”",
            "{name} and {comp} came to a mossy stone bridge, and from underneath it rose a "
            "large, sleepy troll in a nightcap.|“Nobody crosses my bridge,” the troll yawned, "
            "“without answering my riddle.”|“What has a trunk but never packs a suitcase, has "
            "bark but never barks, and wears leaves but never goes out?”|{name} thought hard, "
            "looking around at the forest for clues, and then grinned. “A tree!”|The troll "
            "chuckled so hard the nightcap fell off. “Clever! Off you go.”",
        ),
        _p(
            "{name} and {comp} get through a wall of thorny brambles by crawling along a "
            "rabbit tunnel",
            "{name} found a rabbit tunnel through the thorny brambles.",
            "{name} spotted a rabbit tunnel beneath a wall of thorny brambles, and the friends "
            "wriggled safely through.",
            "{name} saw thorny bushes all around.|Ouch! Prickly!|“How do we get through?” "
            "asked {comp}.|{name} saw a little hole.|A rabbit tunnel!|{name} and {comp} "
            "crawled through. Wriggle, wriggle!|Out popped the friends on the other "
            "side.|“Clever {name}!” said {comp}.",
            "Soon {name} and {comp} found the path blocked by a wall of thorny brambles, "
            "prickly and tangled and far too high to climb.|“Ouch,” said {comp}, pulling back "
            "from a thorn. “We’ll have to go all the way around.”|But {name} had spotted a "
            "neat little hole near the ground, with small footprints leading into it.|“Rabbits "
            "go through here every day,” said {name}. “If a rabbit fits, so can we!”|So the "
            "friends wriggled along the rabbit tunnel and popped out safely on the other side.",
        ),
        _p(
            "{name} works out which stepping stones are safe to cross a rushing river",
            "{name} hopped across the river on mossy stones.",
            "{name} worked out that only the mossy stepping stones were steady, and led "
            "{comp} safely across a rushing river.",
            "{name} and {comp} came to a river.|There were stepping stones.|Some stones were "
            "wobbly!|{name} looked very carefully.|“Only jump on the green stones!”|Hop, hop, "
            "hop. Across!|Not one splash!|“Moss means the stone stays still,” said {name}.",
            "Next {name} and {comp} reached a rushing river with a line of stepping stones "
            "across it.|{comp} jumped onto the first one, and it wobbled so much that {comp} "
            "nearly tumbled into the water.|{name} crouched down and studied the stones. The "
            "wobbly ones were bare and shiny, but a few were covered in soft green moss.|“Moss "
            "only grows on stones that stay still,” {name} said. “Jump only on the mossy "
            "ones!”|Hop, hop, hop, and the friends landed safely on the far bank.",
        ),
        _p(
            "{name} shares sunflower seeds with hungry birds, who show the way through the "
            "Dark Wood",
            "{name} fed the birds, and the birds showed the way.",
            "{name} shared sunflower seeds with a flock of hungry birds, and in return the "
            "birds led the friends out of the Dark Wood.",
            "{name} came to a dark part of the wood.|Which way now?|Some birds were hungry.|"
            "{name} shared some sunflower seeds.|“Thank you!” sang the birds.|“Follow us!”|The "
            "birds flew ahead, and {name} followed.|Out of the dark wood and into the sun!",
            "The path split into five in the shadowy Dark Wood, and {name} had no idea which "
            "way to go.|In the branches above, a flock of little birds sat fluffed up and "
            "hungry.|Without a second thought, {name} scattered the sunflower seeds from home "
            "on a flat stone, and the birds swooped down with happy chirps.|“Thank you!” sang "
            "the smallest bird. “Now, let us show you the way.”|Flitting from branch to "
            "branch, the birds led the friends out of the Dark Wood.",
        ),
    ),
    home=_p(
        "{name} walks back through the little door in the oak tree and grows back to full size "
        "in the garden",
        "Then {name} went back through the little door.",
        "Then {name} walked back through the little green door in the oak tree and grew back "
        "to full size in the garden.",
        "{name} walked back to the little door.|Through the door went {name}.|Whoosh! {name} "
        "was big again!|The garden was quiet.|The oak tree waved its leaves.|{name} ran "
        "inside.|The little door was gone.|But {name} knew it was still there, somewhere.",
        "{name} walked back along the glowing path until the little green door appeared, "
        "exactly where it had been.|Stepping through, {name} felt the world swirl and stretch "
        "once more, and then the grass was just grass again, tickling {name_s} ankles.|The "
        "garden was quiet and golden in the evening light.|Behind {name}, the little door "
        "glowed softly one last time and disappeared into the bark of the old oak tree.",
    ),
)

_DINOSAURS = Kit(
    styles=(
        "bright gouache, leafy greens and warm volcanic oranges",
        "soft watercolour, sunny prehistoric palette",
        "chunky crayon texture, playful bold colours",
    ),
    facts={
        "world_s": "Dinosaur Valley",
        "world_r": "the warm, green valley where the dinosaurs lived",
        "pack_s": "a spade, a magnifying glass and an apple",
        "pack_r": "a little spade, a magnifying glass, a water bottle and two crunchy apples",
        "snack_s": "juicy berries",
        "snack_r": "sweet fern shoots and berries as big as footballs",
        "rest_s": "in the shade of a giant fern",
        "rest_r": "in the cool shade of a fern as tall as a house",
        "party_s": "The dinosaurs stomped and danced",
        "party_r": "The dinosaurs stomped a thundering happy dance that shook the ferns, and "
        "the flying reptiles looped the loop overhead",
        "gift_s": "a little fossil shell",
        "gift_r": "a spiral fossil shell, smooth and cool, from a time long, long ago",
        "night_s": "Outside, the moon shone like a round egg",
        "night_r": "Outside, the moon shone, as round and pale as a dinosaur egg",
    },
    sights=(
        ("a long-neck dinosaur eating treetops",
         "a long-necked dinosaur nibbling leaves from the very tops of the trees"),
        ("dragonflies as big as birds",
         "dragonflies as big as seagulls, with wings that flashed like glass"),
        ("footprints as big as bathtubs", "footprints in the mud as big as bathtubs"),
        ("a volcano puffing smoke rings",
         "a faraway volcano puffing neat little smoke rings, like a dragon blowing bubbles"),
        ("baby dinosaurs hatching",
         "a nest of baby dinosaurs hatching, tapping out of speckled eggs"),
        ("a herd of honking dinosaurs",
         "a herd of duck-billed dinosaurs honking like a brass band"),
    ),
    companions=(
        Companion("Trixie", "a baby triceratops", "with three little horns",
                  "with three stubby horns and a frill like a pink fan",
                  "came trotting out of the ferns", "Hrrrumph! Hello!"),
        Companion("Rexy", "a young T-rex", "with tiny arms and a big smile",
                  "with tiny arms, big feet and an even bigger, toothy smile",
                  "came stomping around a rock", "RAAAWR! Oops, sorry. Hello!"),
        Companion("Pebbles", "a baby stegosaurus", "with spiky plates on its back",
                  "with a row of plates along its back like a spiky crown",
                  "came waddling out of a puddle", "Squeak-squeak! Hello!"),
    ),
    quests=(
        Quest(
            titles=("{name} and the Runaway Dinosaur Egg", "{name} and the Great Egg Rescue"),
            fixed_simple="The baby dinosaur hatched, safe and sound",
            fixed_rich="the egg cracked open, and out wriggled a baby dinosaur, who sneezed, "
            "blinked and snuggled up to Mama Maia",
            quest=_p(
                "Mama Maia the dinosaur has lost an egg that rolled away from the nest; {comp} "
                "and {name} set off to find it before it hatches",
                "{comp} said Mama Maia’s egg had rolled away.",
                "{comp} explained that one of Mama Maia’s eggs had rolled away just before "
                "hatching, and {name} promised to bring it back.",
                "{comp} took {name} to a big mama dinosaur.|The mama dinosaur was crying.|“My "
                "egg rolled away!” said the mama.|“It will hatch soon!”|{name} gave the mama a "
                "pat.|“We will find your egg,” said {name}.|Off went {name} and {comp} to look.",
                "{comp} led {name} to a great nest of mud and leaves, where a mother dinosaur "
                "was pacing anxiously.|“That’s Mama Maia,” whispered {comp}. “One of the eggs "
                "has rolled away down the hill, and it’s going to hatch very soon.”|“My baby "
                "needs to be warm when it hatches,” said Mama Maia, with a wobbly voice.|“Don’t "
                "worry,” said {name}, already looking for tracks. “We’ll find your egg and "
                "bring it home.”",
            ),
            low=_p(
                "{name} finds the egg by the chilly river, but it is cold and starting to "
                "crack, far from the nest",
                "{name} found the egg, but it was cold!",
                "{name} found the egg by the chilly river, but it was cold, already cracking, "
                "and far from the warm nest.",
                "{name} found the egg by the river.|But it was cold!|Crack, went the egg.|It "
                "was starting to hatch!|The nest was far away.|“Oh no,” said {name}.|"
                "The baby needed to be warm.|What could {name} do?",
                "At last, down by the river, {name} found the egg, wedged between two stones.|"
                "But the air by the water was chilly, and the egg was cold to the touch.|Then "
                "came a small sound: crack. The egg was starting to hatch, right here, far from "
                "the warm nest and far from Mama Maia.|{name} looked back at the long hill and "
                "felt a wave of worry. How could the egg stay warm all that way?|What if the "
                "baby got too cold?",
            ),
            solution=_p(
                "{name} wraps the egg in a warm jumper and hums softly, keeping it cosy while "
                "carrying it back to Mama Maia",
                "{name} wrapped the egg up warm and took it home.",
                "{name} wrapped the egg in a woolly jumper, hummed a lullaby to keep it cosy, "
                "and carried it carefully back to Mama Maia.",
                "{name} took off a warm jumper.|{name} wrapped up the egg.|“There you go, "
                "little one,” said {name}.|{name} hummed a soft song.|The egg was warm "
                "again.|The egg gave a happy little wiggle.|"
                "Step by step, {name} carried it home.",
                "{name} pulled off a warm woolly jumper and wrapped it snugly around the egg, "
                "then cuddled it close and began to hum a soft lullaby from home.|Slowly, the "
                "shell grew warm again.|Step by careful step, with {comp} leading the way "
                "around the puddles, {name} carried the egg back up the hill and laid it gently "
                "in the nest beside Mama Maia.|Just in time: the egg gave a wiggle, and a crack "
                "ran all the way around.",
            ),
        ),
        Quest(
            titles=("{name} and the Valley of Fog", "{name} and the Great Dinosaur Journey"),
            fixed_simple="The herd was safe at Sweet Water Lake",
            fixed_rich="the whole herd splashed into Sweet Water Lake, drinking and bathing and "
            "trumpeting with happiness",
            quest=_p(
                "{comp} explains that the long-neck herd must reach Sweet Water Lake, but a "
                "thick fog hides the way",
                "{comp} said the long-necks were lost in the fog.",
                "{comp} explained that a thick fog had hidden the way to Sweet Water Lake, and "
                "{name} promised to help the thirsty long-necks find it.",
                "{comp} looked worried, so {name} asked what was wrong.|“The long-neck "
                "dinosaurs are thirsty,” said {comp}.|“The long-necks need to get to the "
                "lake.”|“But the fog hides the way.”|{name} saw the thick grey fog.|“I will "
                "help,” said {name}.",
                "{comp} led {name} to the edge of the valley, where a herd of long-necked "
                "dinosaurs stood huddled together.|“Every summer the long-necks walk to Sweet "
                "Water Lake to drink,” {comp} explained, “but this year a thick fog came down, "
                "and nobody can remember the way.”|{name} looked out: the fog lay over "
                "everything like a grey blanket.|The littlest long-neck gave a thirsty, "
                "worried groan.|“Don’t worry,” said {name}. “We’ll find the way together.”",
            ),
            low=_p(
                "deep in the fog everyone is lost; even {comp} can't see a thing, and {name} "
                "feels afraid",
                "In the thick fog, {name} felt scared.",
                "Deep in the grey fog, everyone was lost, and {name} felt very small and "
                "afraid.",
                "The fog got thicker around {name}.|{name} could not see the trees.|{name} could "
                "not see the herd.|“Where are we?” said {comp}.|Everyone stopped.|{name} felt "
                "a little scared.|“Hello?” called {name}. Only the fog answered.|Which way was "
                "the lake?",
                "Deeper and deeper the fog grew, until {name} could barely see {comp}, just a "
                "step away.|Which way was the lake? Which way was home? Every direction looked "
                "exactly the same.|Somewhere behind, the long-necks were calling to one "
                "another in worried honks.|{name} stood still, heart thumping, feeling very "
                "small in a very big, very grey world.|“I don’t know where to go,” {name} "
                "whispered.|Beside {name}, {comp} gave a small, frightened shiver.",
            ),
            solution=_p(
                "{name} uses the magnifying glass to follow last summer's footprints in the "
                "mud, leading the whole herd to Sweet Water Lake",
                "{name} followed old footprints, and the herd found the lake!",
                "{name} spotted last summer’s footprints in the mud and, with the magnifying "
                "glass from home, followed the tracks step by step to Sweet Water Lake.",
                "Then {name} looked down.|Footprints! Big old footprints!|{name} took out the "
                "magnifying glass.|“The footprints go to the lake!” said {name}.|{name} "
                "followed the footprints.|“This way, everyone!” called {name}.|Step by step, all "
                "the way through the fog.|The herd followed {name}.",
                "Then {name} looked down instead of up, and noticed something in the mud: huge, "
                "round footprints, old and dry, pressed in a long line.|“Every summer the "
                "long-necks walk this way,” {name} said slowly. “So last summer’s footprints "
                "will lead to the lake!”|With the magnifying glass from home, {name} found each "
                "footprint, one after another, calling out to the herd to follow.|Step by step, "
                "the long line of dinosaurs plodded behind, until the fog thinned and the lake "
                "sparkled ahead.",
            ),
        ),
    ),
    opening=_p(
        "{name} digging for dinosaur fossils in the sandpit at home, surrounded by toy "
        "dinosaurs",
        "{name} loved dinosaurs.",
        "{name} knew more about dinosaurs than almost anyone.",
        "{name} loved dinosaurs.|Big ones, small ones, stompy ones!|{name} had a box of toy "
        "dinosaurs.|Every day, {name} dug in the sandpit.|Dig, dig, dig!|“I am looking for "
        "dinosaur bones,” said {name}.|But {name} only found a worm. Wiggle, wiggle!",
        "{name} knew more about dinosaurs than almost anyone.|Which ones ate plants and which "
        "ones ate meat, which had horns and which had feathers, which were as small as chickens "
        "and which were as tall as houses.|Every afternoon, {name} took a spade out to the "
        "sandpit and dug for fossils, sure that one day something amazing would turn up.|So "
        "far, {name} had found three bottle tops, a lost sock and a very surprised worm.",
    ),
    call=_p(
        "{name} digs up a warm, glowing, speckled stone that hums and makes the sand swirl",
        "One day, {name} dug up a glowing, humming stone.",
        "One day, {name} dug up a warm, speckled stone with a glowing picture of a dinosaur "
        "valley on it, and the sand began to swirl.",
        "One day, {name} dug up a stone.|It was warm.|It was speckled.|It was glowing!|Hum, "
        "hum, went the stone.|The sand began to swirl.|Round and round, faster and "
        "faster!|“Whoa!” said {name}, and held the stone tight.",
        "One day, {name_s} spade hit something hard.|It was a stone, round and speckled like "
        "an egg, and warm as toast, with a faint green glow shining from deep inside.|When "
        "{name} brushed the sand away, a picture appeared on it: a valley full of dinosaurs, "
        "and a little dinosaur waving.|The stone began to hum, and the sand in the sandpit "
        "started to swirl in a slow, glittering circle.",
    ),
    journey=_p(
        "the glowing stone whisks {name} back in time, through a whirl of sand and leaves, to "
        "Dinosaur Valley",
        "Whoosh! The stone took {name} back in time.",
        "The glowing stone whisked {name} through a whirlwind of sand, back millions of years "
        "to Dinosaur Valley.",
        "{name} held the stone tight.|Round and round went the sand.|Whoosh! Round went {name} "
        "too!|Back, back, back in time.|Then, thump!|{name} landed on soft grass.|It smelled of "
        "ferns and rain.|Far away, something went STOMP!|Where was {name} now?",
        "{name} held the glowing stone tight as the swirl of sand grew into a whirlwind, "
        "spinning faster and faster.|Time seemed to run backwards: the house vanished, then "
        "the town, then the roads and the fields.|Through a tunnel of sparkling sand and "
        "whirling leaves {name} flew, back and back, millions of years.|Then, with a soft "
        "thump, {name} landed on a bed of springy moss in a place that smelled of rain and "
        "warm leaves.",
    ),
    arrival=_p(
        "{name} arrives in Dinosaur Valley, with giant ferns, a smoking volcano and dinosaurs "
        "everywhere",
        "{name} landed in a valley full of dinosaurs.",
        "{name} landed in a wide green valley of giant ferns, with dinosaurs everywhere.",
        "{name} looked around.|Big ferns. Big trees. A big volcano!|And dinosaurs! So many "
        "dinosaurs!|Stomp, stomp, went a big one.|“Wow!” said {name}.|“I am in Dinosaur "
        "Valley!”|The ground went bump, bump, under {name_s} feet.|The air was warm, and it "
        "smelled like rain.",
        "{name} sat up and stared.|Ferns as big as umbrellas and trees as tall as towers "
        "filled a wide green valley, and far away a volcano puffed lazily at the sky.|"
        "Everywhere there were dinosaurs: huge ones munching leaves, small ones scampering in "
        "the grass, and great flying reptiles gliding overhead.|The ground trembled gently "
        "with every enormous footstep.|“It’s real,” {name} whispered. “It’s all real.”|A warm "
        "breeze carried the smell of ferns and rain, and somewhere nearby, something small "
        "giggled.",
    ),
    challenges=(
        _p(
            "{name} and {comp} cross a sticky, bubbling swamp by hopping along floating logs",
            "{name} and {comp} hopped over a sticky swamp.",
            "{name} pulled {comp} out of a sticky swamp, and the friends crossed it by hopping "
            "from log to log.",
            "{name} and {comp} came to a muddy swamp.|Squelch! Sticky mud!|{comp} got stuck.|"
            "{name} pulled and pulled.|“Step on the logs!” said {name}.|Hop, hop, hop. "
            "Across!|“Thank you, {name}!” said {comp}, muddy but happy.|What a sticky adventure!",
            "{name} and {comp} came to a swamp of thick brown mud that bubbled and burped.|"
            "{comp} stepped in first and sank deep with a loud squelch. “Help! I’m stuck!”|"
            "{name} looked around and spotted a line of fallen logs floating on the mud.|“Grab "
            "this,” called {name}, holding out a long branch, and pulled {comp} free.|Then, "
            "balancing like tightrope walkers, the two friends hopped from log to log all the "
            "way across.",
        ),
        _p(
            "a huge hungry dinosaur blocks the path; {name} shares the apples, and the dinosaur "
            "lets the friends pass",
            "{name} shared apples with a huge, hungry dinosaur.",
            "{name} realised a huge dinosaur blocking the path was only hungry, shared the "
            "apples, and the grateful giant stepped aside.",
            "Stomp, stomp! {name} saw a huge dinosaur!|It was in the way.|Its tummy rumbled.|"
            "“I’m so hungry,” it said.|{name} gave the dinosaur an apple.|“Yum! Thank you!” It "
            "moved aside.|“Kind hands are strong hands,” said {comp}.|Off went the friends again.",
            "Stomp... stomp... STOMP! {name} froze as an enormous dinosaur stepped out onto the "
            "path, as big as a barn.|{comp} dived behind a fern, but {name} noticed something: "
            "the dinosaur wasn’t growling; its tummy was.|“Excuse me,” {name} called up "
            "bravely, “are you hungry?”|“Starving,” rumbled the dinosaur sadly. “The berries "
            "are all gone this year.”|{name} held out two crunchy apples from home, and the "
            "dinosaur "
            "munched every one in a single happy gulp, then lowered its great head and stepped "
            "politely "
            "aside.",
        ),
        _p(
            "a deep canyon blocks the way, and {name} asks a friendly flying reptile for a "
            "ride across",
            "A flying reptile gave {name} a ride over a canyon.",
            "At the edge of a deep canyon, {name} politely asked a passing flying reptile for "
            "help, and the friends soared across.",
            "{name} came to a big, deep canyon.|No bridge!|A flying dinosaur landed nearby.|"
            "“Can you help us?” asked {name}.|“Climb on!” said the flyer.|Up and over, "
            "whoosh!|The wind whooshed past, and {name} laughed.|Bump! A soft landing on the "
            "other side.",
            "The path ended suddenly at the edge of a deep canyon, and {name} peered over: far, "
            "far below, a river glittered.|There was no bridge, and it was much too wide to "
            "jump.|High above, a flying reptile was circling, watching curiously, so {name} "
            "waved both arms and called politely for help.|The flyer swooped down. “Climb "
            "aboard,” it croaked, “and hold tight.”|{name} and {comp} soared across the canyon "
            "on great leathery wings, whooping all the way.",
        ),
        _p(
            "{name} and {comp} find the way through a maze of giant ferns by climbing a tall "
            "rock to look",
            "{name} climbed a rock and found the way.",
            "Lost in a maze of giant ferns, {name} climbed a tall rock, saw the whole valley "
            "like a map, and guided {comp} out.",
            "{name} and {comp} were in tall, tall ferns.|Which way?|Everything looked the "
            "same!|{name} saw a big rock.|{name} climbed up high.|“I can see the way!” said "
            "{name}.|“Follow me, {comp}!”|Left, then right, then out of the ferns!",
            "Soon {name} and {comp} were lost in a maze of giant ferns, so tall and tangled "
            "that every path looked the same.|“I’m sure we’ve passed that leaf before,” groaned "
            "{comp}.|{name} spotted a tall, smooth rock poking up above the ferns and scrambled "
            "up it, finding footholds in the cracks.|From the top, the whole valley was spread "
            "out like a map.|“This way!” called {name}, pointing, and guided {comp} out of the "
            "maze, turn by turn.",
        ),
    ),
    home=_p(
        "{name} holds the glowing stone, whirls forward in time, and lands back in the sandpit "
        "at home",
        "Then the stone whooshed {name} home to the sandpit.",
        "Then the glowing stone whirled {name} forward through time and set {name} down "
        "softly in the sandpit at home.",
        "{name} held the glowing stone again.|Round and round went the wind.|Whoosh! Forward "
        "in time!|Thump! Back in the sandpit.|Home again!|{name} smiled a big smile.|"
        "The stone was just a pebble again.|But {name} knew it was magic.",
        "{name} held the speckled stone tight once more, and the whirlwind of sand and leaves "
        "rose up again, spinning forward this time, millions of years in the blink of an "
        "eye.|Fields and roads and houses rushed back into place.|With a soft thump, {name} "
        "landed in the sandpit at home, spade still lying exactly where it had been dropped.|"
        "The stone gave one last warm glow and then lay still, looking just like an ordinary "
        "speckled pebble.",
    ),
)

_PIRATES = Kit(
    styles=(
        "sunny watercolour, ocean blues and sandy golds",
        "storybook gouache, turquoise sea and warm wood tones",
        "bold flat colours with soft textures, sunset palette",
    ),
    facts={
        "world_s": "the sea",
        "world_r": "the wide, sparkling sea",
        "pack_s": "a telescope, a compass and an orange",
        "pack_r": "a cardboard telescope, a brass compass, a bag of oranges and a red spotty "
        "scarf",
        "snack_s": "ship biscuits and oranges",
        "snack_r": "crunchy ship biscuits, juicy oranges and a mug of hot cocoa from the galley",
        "rest_s": "in a swinging hammock",
        "rest_r": "in a hammock that swung gently with the rolling of the waves",
        "party_s": "The pirates sang and danced on the deck",
        "party_r": "The whole crew sang sea shanties and danced a jig on the deck, and the "
        "ship’s bell rang and rang",
        "gift_s": "a shiny gold coin",
        "gift_r": "a gold coin with a tiny ship on one side and a smiling sun on the other",
        "night_s": "Outside, the moon shone like a silver coin",
        "night_r": "Outside, the moon shone like a silver coin, and the wind hummed a sea "
        "shanty",
    },
    sights=(
        ("dolphins jumping", "a pod of dolphins leaping alongside the ship, racing the waves"),
        ("an island shaped like a sleeping cat",
         "an island shaped exactly like a sleeping cat, curled up in the sea"),
        ("flying fish", "a shoal of flying fish skimming over the water like silver arrows"),
        ("a rainbow over the sea", "a rainbow arching over the sea from one wave to another"),
        ("a tall lighthouse",
         "a red and white lighthouse on a rock, waving its light like a friendly hand"),
        ("a giant turtle",
         "a giant sea turtle paddling past, with barnacles on its shell like buttons"),
    ),
    companions=(
        Companion("Squawk", "a green parrot", "with a bright red beak",
                  "with a bright red beak and a habit of talking in rhymes",
                  "came swooping down from the crow’s nest", "Ahoy, ahoy! Hello!"),
        Companion("Barnacle", "a ship’s cat", "with a tiny eyepatch",
                  "with a tiny eyepatch and whiskers as long as shoelaces",
                  "came padding along the deck", "Meow-hoy! Hello!"),
        Companion("Captain Goldie", "a kind pirate captain", "with a big laugh",
                  "with a big booming laugh and a hat with a feather as long as an arm",
                  "came striding across the deck", "Ho ho! Welcome aboard!"),
    ),
    quests=(
        Quest(
            titles=("{name} and the Treasure of Coral Island",
                    "{name} and the Secret Treasure Map"),
            fixed_simple="The treasure was found at last",
            fixed_rich="the lid of the chest creaked open, and inside, glittering in the sun, "
            "lay gold coins, jewels and a long-lost golden telescope",
            quest=_p(
                "{comp} shows {name} the treasure map: the lost treasure of Coral Island, which "
                "no crew has ever found",
                "{comp} showed {name} a map to lost treasure.",
                "{comp} showed {name} the map to the lost treasure of Coral Island, which no "
                "crew had ever found, and {name} set course for the island.",
                "{comp} showed {name} the map.|“This is a treasure map!” said {comp}.|“The "
                "treasure is on Coral Island.”|“Nobody has ever found it.”|{name} looked at the "
                "big red X.|“Let’s find it!” said {name}.|Off sailed the ship to Coral Island.",
                "{comp} spread the map across a barrel while {name} leaned in close.|“Coral "
                "Island,” said {comp} in a hushed voice. “The lost treasure of Captain Sunny is "
                "buried there, and no crew has ever found it.”|“Why not?” asked {name}.|"
                "“Because the map is full of riddles, and the island is full of tricks,” said "
                "{comp}. “But maybe it needs someone new to look at it.”|{name} grinned and "
                "helped turn the ship towards Coral Island.",
            ),
            low=_p(
                "on Coral Island a gust of wind snatches the map into the sea; the crew is sure "
                "the treasure is lost",
                "Oh no! The wind blew {name_s} map into the sea.",
                "On Coral Island a wild gust snatched the map out of {name_s} hands and into "
                "the sea, and the crew groaned that the treasure was lost for ever.",
                "On the island, a big wind came, and {name} held on tight.|Whoosh! The map flew "
                "away!|Into the sea it went.|“Oh no!” cried {name}.|“Now we can’t find the "
                "treasure.”|{name} sat down on the sand.",
                "The Jolly Dolphin anchored off Coral Island, and {name} waded ashore holding "
                "the precious map.|But just then a wild gust of wind snatched the map clean out "
                "of {name_s} hands.|Up it flew, over the palm trees, and down, down into the "
                "crashing waves.|“The map!” cried the crew. “Now we’ll never find the "
                "treasure!”|{name} sank down onto the sand, feeling terrible. It had all been "
                "going so well.",
            ),
            solution=_p(
                "{name} remembers the map by heart, counts ten steps from the crooked palm tree, "
                "and finds the treasure",
                "{name} remembered the map and found the treasure!",
                "{name} remembered every detail of the map, counted ten big steps from the "
                "crooked palm tree, and showed the crew exactly where to dig.",
                "Then {name} closed both eyes and remembered the map.|“Ten steps from the "
                "crooked tree,” said {name}.|One, two, three... ten!|“Dig here!”|Dig, dig, "
                "dig.|Everyone helped to dig, deeper and deeper.|What was down there?|Clunk! A "
                "treasure chest!",
                "Then {name} closed both eyes and thought hard, picturing the map exactly as it "
                "had looked on the barrel.|“Start at the crooked palm tree,” {name} said "
                "slowly. “Then ten big steps towards the rock shaped like a whale, and dig where "
                "the sand is pink.”|The crew stared. “You remember it all?”|{name} marched to "
                "the crooked palm and counted aloud all the way to ten, then pointed at a patch "
                "of pink sand.|The crew dug, and dug, and then: clunk! A treasure chest.",
            ),
        ),
        Quest(
            titles=("{name} and the Not-So-Scary Sea Monster", "{name} and the Secret of the Sea "
                    "Serpent"),
            fixed_simple="The sea monster was free and happy",
            fixed_rich="the sea monster, free at last, rose out of the water and gave a great "
            "happy splash that soaked the whole crew",
            quest=_p(
                "{comp} warns {name} that a sea monster is blocking the way into Pebble "
                "Harbour, and the whole crew is scared",
                "{comp} said a sea monster was blocking the way.",
                "{comp} warned {name} that a sea monster was blocking Pebble Harbour, and "
                "{name} bravely decided to find out what was going on.",
                "{comp} pointed out to sea and called {name} over.|“There is a sea monster out "
                "there,” said {comp}.|“The monster is in the way.”|The pirates were scared.|"
                "{name} was a little scared too.|“Let’s go and see,” said {name}.",
                "{comp} hurried over to {name}, looking pale.|“There’s a sea monster at the "
                "mouth of Pebble Harbour,” {comp} whispered. “It thrashes and roars, and no "
                "ship can get past to go home.”|All around, the crew shivered and muttered "
                "about teeth and tentacles.|{name} swallowed hard. A sea monster sounded very "
                "scary indeed.|But somebody had to find out what was going on. “Let’s go and "
                "take a look,” said {name}.",
            ),
            low=_p(
                "the sea monster rises out of the water, roaring and thrashing; the crew hides "
                "and {name} feels very scared",
                "“ROAR!” went the sea monster. {name} was scared.",
                "The sea monster rose from the waves, roaring and thrashing, and while the crew "
                "hid, {name} stood trembling at the rail.",
                "Splash! The sea monster came up out of the water, and {name} jumped.|It was "
                "big! It was green!|“ROAR!” went the monster.|The pirates hid.|{name} wanted "
                "to hide too.|{name} was very scared.|But {name} did not run away.",
                "As the ship drew near the harbour, the sea began to churn, and with a "
                "tremendous splash, the sea monster rose out of the water right in front of "
                "{name}.|It was as long as ten ships, green and scaly, and it roared and "
                "thrashed so hard that the Jolly Dolphin rocked.|The crew dived below deck. "
                "Even {comp} hid behind a barrel.|{name} gripped the rail, knees wobbling, "
                "wishing more than anything to be safely home in the bath.",
            ),
            solution=_p(
                "{name} sees that the sea monster is tangled in old fishing nets and crying, and "
                "kindly sets it free",
                "{name} saw the monster was stuck, and set it free!",
                "{name} saw that the monster was not angry but tangled in old fishing nets, "
                "rowed out and gently untangled every strand.",
                "Then {name} looked at the monster again, and saw tears.|The monster was "
                "crying!|It was all tangled in old nets.|“Poor thing,” said {name}.|{name} "
                "pulled the nets away, one by one.|The monster smiled a big smile.",
                "But then {name} looked again, really looked, and saw something nobody else had "
                "noticed: the monster’s eyes were full of tears.|Its tail was wrapped in a "
                "great tangle of old fishing nets, and every time it thrashed, the nets pulled "
                "tighter.|“It isn’t angry,” {name} said. “It’s hurt!”|So {name} climbed into "
                "the rowing boat, rowed right up to the monster, and, strand by strand, gently "
                "untangled every last piece of net.",
            ),
        ),
    ),
    opening=_p(
        "{name} playing pirates at home in a cardboard-box ship, wearing a paper pirate hat",
        "{name} loved to play pirates.",
        "{name} had built the finest cardboard pirate ship in the whole house.",
        "{name} loved to play pirates.|{name} had a ship made from a big box.|{name} had a "
        "paper pirate hat.|“Ahoy!” shouted {name}.|“Land ahoy!”|The box ship sailed across "
        "the carpet.|But {name} wished for a real ship, on the real sea.",
        "{name} had built the finest pirate ship in the whole house, out of a big cardboard "
        "box, a broom for a mast and a bedsheet for a sail.|Every afternoon, wearing a paper "
        "pirate hat, {name} sailed it across the stormy carpet, past the dangerous sofa rocks "
        "and around the coffee-table island.|“Land ahoy!” {name} would shout through a "
        "cardboard telescope.|But deep down, {name} dreamed of sailing a real ship on the real "
        "sea.",
    ),
    call=_p(
        "a message in a bottle bobs up in {name_s} bath, with a treasure map and an invitation "
        "to join a pirate crew",
        "A bottle with a map bobbed up in {name_s} bath.",
        "One evening, a bottle bobbed up in {name_s} bath, with a map and a note inviting "
        "{name} to join a pirate crew.",
        "At bath time, {name} saw a little bottle.|It bobbed in the bubbles!|Inside was a "
        "map.|“Dear {name}, come and be a pirate!” said the note.|The bath began to swirl.|"
        "Splash!|All around, the bath became the big blue sea!",
        "That evening at bath time, {name} noticed something bobbing up through the bubbles: a "
        "little glass bottle with a cork in the top.|Inside was a map with a big red X, and a "
        "note: “Dear {name}, the crew of the Jolly Dolphin needs a brave new shipmate. Are you "
        "ready?”|Suddenly the bath water began to swirl and grow, and the sound of seagulls "
        "filled the air.|{name} held on tight.",
    ),
    journey=_p(
        "{name} is whisked aboard the Jolly Dolphin, a real pirate ship sailing out to sea",
        "Whoosh! {name} was whisked aboard a real pirate ship.",
        "In a rush of spray, {name} was whisked aboard the Jolly Dolphin, a real pirate ship "
        "racing across the waves.",
        "Whoosh! {name} was on a real ship!|The sails were big and white.|The wind blew.|The "
        "waves went splash!|“Ahoy!” shouted {name}.|Off sailed the Jolly Dolphin.|The sea "
        "sparkled in the sun.|Seagulls called, “Hello, {name}!”|What a big, blue sea!",
        "In a rush of spray and sunshine, {name} found the bathroom gone and a wooden deck "
        "underfoot.|It was a real pirate ship, the Jolly Dolphin, with three tall masts, a flag "
        "with a smiling dolphin on it, and sails puffed out like clouds.|The ship leaned into "
        "the wind and began to race across the waves, salt spray sparkling in the air.|{name} "
        "grabbed the rail and laughed. This was even better than the carpet.",
    ),
    arrival=_p(
        "{name} meets the cheerful pirate crew on deck and gets a real pirate hat",
        "The jolly pirate crew gave {name} a real pirate hat.",
        "The cheerful crew of the Jolly Dolphin welcomed {name} aboard with a real "
        "three-cornered pirate hat.",
        "The pirates came to say hello, and {name} waved.|The pirates were kind and jolly.|One "
        "had a big beard. One had a wooden spoon.|A pirate gave {name} a real pirate hat.|"
        "“Welcome to the crew!” said the pirates.|{name} felt like a real pirate!",
        "The crew of the Jolly Dolphin gathered round to welcome {name} aboard.|There was Big "
        "Ben, who could lift an anchor with one hand; Tiny Tess, who climbed the rigging like "
        "a squirrel; and old Cookie, who made the best pancakes on all seven seas.|Tess placed "
        "a real three-cornered pirate hat on {name_s} head.|“Welcome to the crew, shipmate!” "
        "everyone cheered, and {name} felt taller than the tallest mast.",
    ),
    challenges=(
        _p(
            "a storm tosses the ship, and {name} helps the crew pull down the sails together",
            "In a storm, {name} helped pull down the sails.",
            "When a wild storm struck, {name} got the whole crew pulling together to bring "
            "down the sails.",
            "{name} saw dark clouds. A storm!|The wind blew hard.|The waves were big!|“Pull down "
            "the sails!” called {name}.|Everyone pulled together.|The ship was safe.|The storm "
            "rumbled away.|The sun came out again.|“Well done, shipmate {name}!” said {comp}.",
            "Dark clouds rolled in, and {name} felt the first fat raindrops. A storm was "
            "coming!|The wind howled through the ropes, and waves as high as houses crashed "
            "over the deck.|“The sails will tear!” shouted the crew, but the ropes were wet and "
            "heavy and nobody could hold on alone.|{name} grabbed a rope and called, "
            "“Everybody pull when I count! One, two, three, heave!”|Pulling together, the crew "
            "brought down the sails, and the Jolly Dolphin rode out the storm safely.",
        ),
        _p(
            "{name} guides the ship safely through the jagged Crab Rocks from the crow's nest",
            "From the mast, {name} spotted the sharp rocks.",
            "From the crow’s nest, {name} read the colour of the water and guided the ship "
            "safely through the jagged Crab Rocks.",
            "{name} climbed up the tall mast.|Down below were sharp rocks.|{name} looked and "
            "looked.|“Go left!” called {name}.|“Now go right!”|The ship sailed safely "
            "past.|White water meant rocks.|Blue water meant safe.|“Well spotted, {name}!” "
            "cheered the crew.",
            "Ahead lay the Crab Rocks, sharp as teeth and hiding just beneath the waves, so "
            "{name} climbed the mast to the crow’s nest to look out.|From up high, {name} "
            "could see something the crew could not: where the water swirled white, there were "
            "rocks below; where it was smooth and dark blue, the sea was deep and safe.|“Left "
            "a bit! Now right! Straight ahead!” {name} called down.|The ship was steered "
            "exactly as {name} said, and slipped through without a single scrape.",
        ),
        _p(
            "a giant octopus holds on to the anchor; {name} finds out it only wants to play, "
            "and plays a game of catch",
            "{name} played catch with a lonely octopus.",
            "{name} discovered that the giant octopus clinging to the anchor only wanted a "
            "playmate, and a game of catch set the ship free.",
            "The ship would not move, and {name} looked over the side.|A big octopus was "
            "holding the anchor!|“Please let go,” said {name}.|“But I want to play,” said the "
            "octopus.|So {name} played a game of catch.|Then the octopus let go. Hooray!",
            "Suddenly the Jolly Dolphin stopped dead, and {name} peered over the side to see "
            "why.|A giant purple octopus had wrapped all eight arms around the anchor chain, "
            "holding on tight.|The crew shouted and waved mops, but that only made the octopus "
            "hold on tighter.|{name} leaned over and asked, “Why are you holding our ship?”|"
            "“Because nobody ever stays to play with me,” said the octopus. So {name} played "
            "catch with the octopus, using an old ball from the deck, until the octopus laughed "
            "and happily let go.",
        ),
        _p(
            "on the island, {name} helps {comp} across a wobbly rope bridge, one careful step "
            "at a time",
            "{name} helped {comp} across a wobbly rope bridge.",
            "{name} coaxed {comp} across a swaying rope bridge, one careful step at a time.",
            "{name} and {comp} came to a rope bridge.|It was wobbly!|Wibble, wobble.|“Hold on "
            "tight,” said {name}.|“One step at a time.”|Step, step, step. Across!|{comp} gave "
            "{name} a big, happy hug.|“Thank you for helping me be brave!”",
            "On the way, {name} and {comp} came to an old rope bridge over a deep, leafy "
            "ravine, and it swayed in the breeze.|Wibble, wobble, creak.|{comp} took one look "
            "and froze. “I can’t,” came a very small voice.|{name} held out a hand. “Don’t "
            "look down. Just look at me, and take one step at a time.”|Slowly, step by step, "
            "the two friends crossed together, and on the far side {comp} let out a huge "
            "breath and laughed with relief.",
        ),
    ),
    home=_p(
        "the Jolly Dolphin sails {name} home across a moonlit sea, and {name} is back in the "
        "bath",
        "Then the ship sailed {name} home to the bath.",
        "Then the Jolly Dolphin sailed {name} home across a moonlit sea, until the waves "
        "turned back into bath bubbles.",
        "{name} waved goodbye to the crew.|The ship sailed on the moonlit sea.|Then, swish, "
        "swish!|The sea became bubbles.|{name} was back in the bath!|The little bottle was "
        "empty.|But {name} was still wearing a real pirate hat!",
        "{name} stood at the wheel of the Jolly Dolphin as the ship sailed home across a sea "
        "turned silver by the moon.|The waves rocked gently, the sails sighed, and the stars "
        "came out one by one.|Then the sea began to swirl, just as it had before, and the "
        "splash of waves turned into the pop of bubbles.|{name} blinked. There was the bath, "
        "the yellow duck, the fluffy towel: home, and the water still warm.",
    ),
)

_SUPERHERO = Kit(
    styles=(
        "bright comic-book colours with soft rounded shapes",
        "cheerful gouache, primary colours and warm sunlight",
        "clean flat illustration, bold reds and sky blues",
    ),
    facts={
        "world_s": "Hero City",
        "world_r": "the bright, busy streets of Hero City",
        "pack_s": "a red cape, rain boots and an apple",
        "pack_r": "a red cape, a pair of rain boots, a torch and an apple for extra energy",
        "snack_s": "power pancakes with berries",
        "snack_r": "a stack of power pancakes with a mountain of blueberries on top",
        "rest_s": "in a rooftop garden",
        "rest_r": "in a rooftop garden high above the city, among sunflowers and buzzing bees",
        "party_s": "The whole city cheered",
        "party_r": "The whole city cheered, fireworks popped in every colour, and the heroes "
        "flew loops over the rooftops",
        "gift_s": "a shiny hero badge",
        "gift_r": "a shiny golden hero badge shaped like a star, with the words ‘Brave and "
        "Kind’ on the back",
        "night_s": "Outside, the city lights twinkled",
        "night_r": "Outside, the streetlights twinkled, keeping watch like little heroes",
    },
    sights=(
        ("a tower shaped like a rocket",
         "a tower shaped like a rocket, with windows that flashed hello"),
        ("a rainbow bridge", "a bridge made of rainbow light, with flying buses zooming across"),
        ("heroes flying in a line",
         "a line of heroes flying past in perfect formation, capes fluttering"),
        ("a park with giant trampolines",
         "a park full of giant trampolines where young heroes practised high jumps"),
        ("a clock tower with a smiley face",
         "a tall clock tower with a smiling face that winked on the hour"),
        ("a robot watering flowers", "a helpful robot watering the flowers along the pavement"),
    ),
    companions=(
        Companion("Blaze", "a superhero puppy", "with a tiny blue mask",
                  "with a tiny blue mask and a cape that flapped with every wag",
                  "came zooming down from a rooftop", "Woof! Hero pup, reporting for duty!"),
        Companion("Echo", "a clever bat", "with great big ears",
                  "with great big ears that could hear a whisper from a mile away",
                  "came swooping down from a lamppost", "Eek-eek! Hello, hero!"),
        Companion("Tilly Thunder", "a young hero", "with lightning boots",
                  "with crackling lightning boots and a wide, friendly grin",
                  "came zipping round the corner in a flash of light", "Zap! Hi there!"),
    ),
    quests=(
        Quest(
            titles=("{name} and the Great Grumpy Cloud", "{name} and the Cloud Who Hid the Sun"),
            fixed_simple="The sun came out and a rainbow shone",
            fixed_rich="the Grumpy Cloud smiled so widely that the sun burst out, and a huge "
            "rainbow arched over the whole of Hero City",
            quest=_p(
                "{comp} explains that a huge grumpy grey cloud has covered the city, making "
                "everyone sad",
                "{comp} showed {name} a big, grumpy cloud.",
                "{comp} showed {name} the Grumpy Cloud, which made everyone gloomy and only "
                "grew bigger when the heroes fought it.",
                "{comp} pointed up, and {name} looked.|A big grey cloud was over the city.|"
                "“That cloud makes everyone grumpy,” said {comp}.|“Even the heroes!”|{name} saw "
                "sad faces everywhere.|“I will help,” said {name}.|“Big clouds need brave "
                "hearts!” {comp} smiled.",
                "{comp} pointed up at the sky, and {name} saw a vast, grey, grumbling cloud "
                "rolling across the city.|“The Grumpy Cloud,” said {comp} with a sigh. "
                "“Everywhere its shadow falls, people stop smiling. The heroes have tried "
                "everything: wind machines, giant fans, even shouting at it. But it only gets "
                "bigger.”|Below the cloud, the bright city was turning dull and gloomy.|“Let "
                "me try,” said {name}.|{comp} blinked. “You? But it’s enormous!”",
            ),
            low=_p(
                "the heroes fight the cloud and it only grows; even {comp} gives up, and "
                "{name_s} cape stops glowing",
                "The cloud grew bigger, and {name} felt sad.",
                "The more the heroes fought it, the bigger the Grumpy Cloud grew, until even "
                "{name_s} cape stopped glowing.",
                "The cloud grew bigger and bigger, and {name} looked up.|Rumble, rumble!|It "
                "began to rain.|{comp} looked sad.|Even {name_s} cape stopped glowing.|{name} "
                "felt small and sad.|How could anyone stop such a big cloud?|Even heroes feel "
                "sad sometimes.",
                "The heroes blew at the cloud with fans and zapped it with lightning, but the "
                "Grumpy Cloud just grew bigger and darker and began to pour with rain, soaking "
                "{name}.|{comp} sat down in a puddle. “It’s hopeless,” {comp} sighed.|Even "
                "{name_s} cape stopped glowing and hung limp and soggy.|{name} looked up at the "
                "enormous cloud and felt very small, very wet, and not very heroic at all.|How "
                "could anyone stop a cloud that big?",
            ),
            solution=_p(
                "{name} flies up and asks the cloud what is wrong; the cloud is lonely, {name} "
                "offers friendship, and the sun comes out",
                "{name} asked the cloud to be friends!",
                "Instead of fighting, {name} flew up and asked the cloud what was wrong, and "
                "offered the lonely cloud a friend.",
                "Then {name} flew up to the cloud.|“Hello, Cloud,” said {name}.|“Why are you "
                "sad?”|“Nobody likes me,” said the cloud.|“I like you,” said {name}.|“Will you "
                "be my "
                "friend?” asked the cloud.|The cloud smiled a big smile.",
                "Then {name} had a thought: nobody had asked the cloud why it was grumpy.|So "
                "{name} flew right up into the grey mist and said, “Hello, Cloud. Are you "
                "alright?”|The cloud was so surprised that it stopped raining. “Nobody has ever "
                "said hello to me,” it rumbled. “Everyone just wants me to go away.”|“Well, I’d "
                "like to be your friend,” said {name}.|And slowly, the Grumpy Cloud began to "
                "smile.",
            ),
        ),
        Quest(
            titles=("{name} and the Runaway Robot", "{name} Saves Hero City"),
            fixed_simple="Bolt the robot was calm and happy",
            fixed_rich="Bolt beeped happily and promised to play only in the park, after "
            "sweeping every street in the city",
            quest=_p(
                "{comp} shows {name} that Bolt, the city's giant helper robot, is running wild "
                "all over town",
                "Bolt the big robot was running wild!",
                "{comp} explained that Bolt, the biggest helper robot in Hero City, was running "
                "wild, and {name} set off to find out why.",
                "{comp} and {name} heard a big crash.|It was Bolt, the big helper robot.|Bolt "
                "was running everywhere!|Crash! Bang! Wheee!|“Nobody can stop Bolt,” said "
                "{comp}.|“I will try,” said {name}.|{name} and {comp} ran to follow the crashes.",
                "Just then, {name} heard a tremendous crash, and {comp} groaned.|“That’s "
                "Bolt,” {comp} explained, “the biggest helper robot in Hero City. Bolt is meant "
                "to sweep streets and carry heavy things. But this morning Bolt started running "
                "wild, and nobody can catch up.”|Round the corner raced an enormous robot, "
                "knocking over bins, scattering pigeons and leaving a trail of chaos behind.|"
                "“Let’s find out what’s wrong,” said {name}.|{comp} looked doubtful, but "
                "followed anyway.",
            ),
            low=_p(
                "Bolt is too big and too fast for anyone to catch, and {name} tumbles into a "
                "pile of cardboard boxes",
                "Bolt was too fast, and {name} fell over.",
                "Bolt was too big and too fast for even the speediest heroes, and {name} ended "
                "up tumbling into a pile of cardboard boxes.",
                "{name} ran after Bolt.|Bolt was too fast!|{comp} ran too.|Bolt was too big!|"
                "Bump! {name} fell over.|“Oh no,” said {name}.|"
                "{name} sat in a pile of boxes.|Nobody could stop Bolt!|What could a little hero "
                "do?",
                "{name} flew after Bolt, but Bolt was faster than a train.|The speediest heroes "
                "in the city raced alongside and could not keep up; the strongest hero tried to "
                "grab Bolt’s arm and was spun round like a top.|Then Bolt swerved, and {name} "
                "tumbled into a pile of cardboard boxes.|Sitting there with a box on {name_s} "
                "head, {name} felt like the least super hero in the whole city.",
            ),
            solution=_p(
                "{name} notices Bolt only wants to play, and calls out a game of Statues; Bolt "
                "freezes happily and the chaos stops",
                "{name} played Statues, and Bolt stood still!",
                "{name} realised that Bolt was not broken but playing, and stopped the robot "
                "with a game of Statues.",
                "Then {name} watched Bolt.|Bolt was laughing!|“Bolt wants to play!” said "
                "{name}.|{name} jumped up onto a bench.|“Let’s play Statues!” called {name}.|"
                "Bolt stopped to listen. Bolt loved games!|“Ready... FREEZE!”|Bolt played "
                "Statues and stood very, very still.",
                "But from inside the box, {name} noticed something: Bolt’s lights were flashing "
                "happily, and Bolt was making a sound like giggling.|“Bolt isn’t broken,” "
                "{name} realised. “Bolt just wants to play!”|So {name} jumped up onto a bench "
                "and shouted, “Bolt! Let’s play Statues! When I say freeze, you freeze! "
                "Ready... FREEZE!”|Every hero in the street held a breath.|Bolt skidded to a stop "
                "and stood perfectly, beautifully still, beeping with delight.",
            ),
        ),
    ),
    opening=_p(
        "{name} at home wearing a red towel as a cape, helping everyone like a superhero",
        "{name} loved to be a superhero.",
        "{name} had a cape made from a red towel, and a hero’s heart.",
        "{name} had a super red cape.|It was really a towel!|But {name} was a real helper.|"
        "{name} found lost socks.|{name} helped carry the shopping.|“Super {name} to the "
        "rescue!”|Every day, {name} helped someone.|That is what heroes do.",
        "{name} had a cape made from a red bath towel, fastened with a clothes peg, and "
        "wearing it made {name} feel ready for anything.|Every day, Super {name} was on duty: "
        "rescuing lost teddies from under beds, finding missing socks, and carrying shopping "
        "bags that were almost as big as {name}.|“Who needs a hero?” {name} would call, "
        "striding down the hallway.|And somebody always did.|But that night, something very "
        "special was about to happen.",
    ),
    call=_p(
        "the red cape begins to glow, and a hero signal in the sky calls {name} to Hero City",
        "One night, {name_s} cape began to glow!",
        "One night, {name_s} red cape began to glow, and a hero signal in the clouds called "
        "{name} to Hero City.",
        "One night, {name} saw the cape begin to glow.|Glow, glow, glow!|A light shone in the "
        "sky.|It was a hero signal!|“Calling {name}!” said a voice.|“Hero City needs "
        "you!”|{name} tied on the glowing cape, ready to help.",
        "One night, as {name} hung the red cape on the bedpost, it began to glow, softly at "
        "first and then brighter and brighter.|Outside the window, a beam of light swept "
        "across the clouds, making a shape: a star with a heart in the middle.|“Calling "
        "{name}!” boomed a friendly voice from nowhere at all. “Hero City needs a new hero, "
        "someone brave and kind. Will you come?”|{name} tied on the glowing cape with "
        "trembling fingers.",
    ),
    journey=_p(
        "the glowing cape lifts {name} into the sky, flying over the rooftops to Hero City",
        "{name} flew all the way to Hero City.",
        "{name} soared out of the window, over the sleeping town, towards the bright lights "
        "of Hero City.",
        "{name} jumped up.|Whoosh! {name} was flying!|Up over the house.|Up over the trees.|"
        "“I can fly!” shouted {name}.|Off to Hero City!|The wind whooshed past.|The stars "
        "twinkled.|Far away, a city of lights was shining! Zoom!",
        "{name} gave a little jump, and instead of coming down, kept going up.|The cape "
        "billowed out, and {name} soared out of the window, over the rooftops, over the park, "
        "over the sleeping town.|The wind whooshed past, the stars sparkled, and {name} "
        "laughed, swooping and looping like a swallow.|Far ahead, a city of bright lights and "
        "tall towers rose up on the horizon, shining like a treasure chest.",
    ),
    arrival=_p(
        "{name} lands in bright Hero City, where heroes of every kind are busy helping",
        "{name} landed in busy, bright Hero City.",
        "{name} landed on a rooftop in Hero City, where heroes of every kind were busy "
        "helping.",
        "{name} landed in Hero City.|The houses were bright colours.|Heroes flew by.|A hero "
        "helped a cat.|A hero carried a bus!|“Wow!” said {name}.|Everyone was busy helping.|A "
        "hero waved. “Welcome, {name}!”|{name} waved back with a big smile.",
        "{name} landed lightly on a rooftop in the middle of Hero City.|The buildings were "
        "painted every colour in the sweet shop, and heroes were everywhere: one lifting a "
        "stuck bus, one rescuing a kitten from a lamppost, one helping an old man across the "
        "road.|Everyone was busy, and everyone was smiling.|A passing hero gave {name} a "
        "thumbs-up. “Welcome to Hero City, new hero!”|{name} grinned so widely it almost hurt.",
    ),
    challenges=(
        _p(
            "{name} rescues a frightened kitten stuck at the top of a very tall tree",
            "{name} rescued a kitten from a tall tree.",
            "{name} flew gently up to rescue a frightened kitten from the top of the tallest "
            "tree in the park.",
            "{name} heard a tiny “Meow!”|A kitten was stuck in a tall tree.|“I will help,” said "
            "{name}.|Up, up flew {name}.|{name} held the kitten gently.|Down, down, "
            "safe!|“Purr,” said the kitten.|The kitten was safe, and {name} was so happy.",
            "“Meow!” {name} looked up to see a tiny kitten clinging to the very top of the "
            "tallest tree in the park.|The branches were thin and bendy, far too weak for a "
            "ladder.|{name} flew up slowly and carefully, so as not to scare the kitten, "
            "talking in a soft, calm voice the whole way.|“It’s alright, little one. I’ve got "
            "you.”|The kitten crept into {name_s} arms, and {name} floated gently back down to "
            "the kitten’s very grateful owner.",
        ),
        _p(
            "the traffic lights break, and {name} stands in the middle of the crossroads "
            "directing the traffic",
            "{name} directed the traffic when the traffic lights broke.",
            "When the traffic lights broke, {name} untangled a honking traffic jam by directing "
            "the cars one by one.",
            "{name} saw the traffic lights go out.|Beep! Beep! Honk!|The cars were all stuck.|"
            "{name} stood in the middle.|“Stop!” said {name}. “Go!”|The cars went. Hooray!|“Beep "
            "beep! Thank you!” said the drivers.|{name} gave a big wave.|What a helpful hero!",
            "At the busiest crossroads in the city, the traffic lights had gone dark, and "
            "{name} arrived to a terrible tangle of honking cars, beeping buses and grumbling "
            "drivers.|Nobody knew whose turn it was.|{name} floated up into the middle of the "
            "crossroads and raised one hand, like the crossing patrol at school.|“You stop. You "
            "go. Now you go,” {name} called clearly, pointing one way and then another.|Bit by "
            "bit, the tangle untangled, and the drivers honked a thank-you.",
        ),
        _p(
            "a little child holding a huge bunch of balloons floats away, and {name} flies up "
            "to help",
            "{name} caught a child floating away on balloons.",
            "{name} zoomed up to catch a little child carried off by a bunch of balloons, and "
            "brought the child gently back down.",
            "{name} saw a child with lots of balloons.|Up, up went the child!|“Help!” called "
            "the child.|{name} flew up fast.|{name} held on tight.|Gently, {name} flew the "
            "child back down.|“Thank you, hero!” said the child’s family.|The child gave {name} "
            "a balloon to keep.",
            "Over at the fair, a gust of wind lifted a huge bunch of balloons into the sky, "
            "with a little child still holding on, and {name} heard the cry for help.|Up and "
            "up floated the child, past the roofs and towards the clouds.|{name} zoomed after, "
            "faster than ever before, and caught hold of the child’s hand.|“I’ve got you,” "
            "{name} said. “Let’s let go of a few balloons, one at a time.”|Pop, pop, pop went "
            "the balloons, until the two floated gently back down to a very relieved family.",
        ),
        _p(
            "a power cut plunges the city into darkness, and {name} leads everyone safely home "
            "with a torch",
            "In the dark, {name_s} torch showed everyone the way.",
            "When every light in Hero City went out, {name} switched on the torch and led "
            "everyone safely through the dark streets.",
            "{name} saw all the lights go out.|It was very dark.|Some people were scared.|"
            "{name} took out a little torch.|Click! Light!|“Follow me!” said {name}.|Everyone "
            "held hands in a long line.|{name} led the way, step by step.|Then the lights came "
            "back on!",
            "Suddenly every light in Hero City went out, and {name} could hardly see a thing.|"
            "In the darkness, people bumped into lampposts and little ones began to cry.|"
            "{name} pulled a little torch from a pocket and clicked it on, a small bright "
            "circle in the dark.|“Don’t worry! Hold hands and follow me,” called {name}, "
            "leading a long line of people safely along the dark streets until, with a hum, "
            "the lights flickered back on.",
        ),
    ),
    home=_p(
        "{name} flies home through the night sky and slips back in through the bedroom window",
        "Then {name} flew home through the window.",
        "Then {name} flew home across the night sky and slipped back in through the bedroom "
        "window.",
        "{name} flew up into the night sky.|Over the rooftops.|Over the park.|In through the "
        "window.|Home again!|The cape stopped glowing.|It was just a towel again.|But {name} "
        "knew what it could do!|Shh! Everyone was asleep.",
        "{name} rose into the night sky, and Hero City sparkled below like a box of jewels, "
        "then shrank away behind.|Over hills and fields and the sleeping town {name} flew, "
        "until the familiar roof came into view and the bedroom window stood open, curtains "
        "fluttering.|{name} slipped inside and landed as softly as a feather on the bedroom "
        "rug.|The red cape gave one last glow, then became an ordinary towel again.",
    ),
)

_KITS: dict[str, Kit] = {
    "space_adventure": _SPACE,
    "underwater": _UNDERWATER,
    "enchanted_forest": _FOREST,
    "dinosaurs": _DINOSAURS,
    "pirates": _PIRATES,
    "superhero": _SUPERHERO,
}
assert set(_KITS) == set(THEMES), "every theme needs hand-written material"


# --------------------------------------------------------------------------------------
# Planning: from a StoryRequest to every page's beat and text
# --------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# The child's name is data: inserted as-is and never scanned for placeholders again, so a
# name like "{comp}" or "<b>" comes out literally (escaping is the renderer's job).
_LITERAL_KEYS = frozenset({"name", "name_s"})
_KEEP_FORMAT_CHARS = frozenset("\u200c\u200d")  # ZWNJ/ZWJ shape some scripts' letters


def _fill(template: str, ctx: dict[str, str]) -> str:
    """Replace ``{key}`` with ctx values; facts may themselves contain ``{name}`` etc."""

    def sub(match: re.Match[str]) -> str:
        key = match.group(1)
        value = ctx[key]
        return value if key in _LITERAL_KEYS else _fill(value, ctx)

    return _PLACEHOLDER.sub(sub, template)


def _words(text: str) -> int:
    return len(text.split())


def normalize_name(raw: str) -> str:
    """The name as printed: NFC, whitespace collapsed, invisible control characters dropped."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    return "".join(
        ch for ch in name
        if unicodedata.category(ch) not in ("Cc", "Cf") or ch in _KEEP_FORMAT_CHARS
    )


@dataclass(frozen=True)
class PlannedPage:
    beat: str
    text: str
    own: str  # the slot this page is about, e.g. "solution"
    slots: tuple[str, ...]  # every slot told on this page (its own and folded ones), in order


@dataclass(frozen=True)
class StoryPlan:
    title: str
    style: str
    pages: tuple[PlannedPage, ...]


def _validate(req: StoryRequest) -> tuple[Kit, str]:
    theme = resolve_theme(req.theme or "")
    if theme is None:
        raise PermanentStepError(
            f"Unknown story theme '{req.theme}'. Choose one of: {', '.join(THEMES)}."
        )
    name = normalize_name(req.child_name or "")
    if not name:
        raise PermanentStepError("The child's name is empty. Please enter the child's name.")
    if not MIN_PAGES <= req.page_count <= MAX_PAGES:
        raise PermanentStepError(
            f"A story has {MIN_PAGES} to {MAX_PAGES} pages; {req.page_count} were asked for."
        )
    if req.child_age < 0:
        raise PermanentStepError(f"The child's age can't be negative ({req.child_age}).")
    return _KITS[theme.id], name


@lru_cache(maxsize=256)
def plan_story(req: StoryRequest) -> StoryPlan:
    """The whole story for a request: deterministic in the request (the seed drives choices).

    Cached because ``write_outline`` and every ``write_page`` on a worker rebuild the same plan.
    """
    kit, name = _validate(req)
    rng = random.Random(req.seed)
    # Every choice comes from the seed, drawn in a fixed order, so a story id gives the same
    # story on every worker. Editing a theme's material changes that theme's stories for the
    # same seeds: let in-flight stories finish before deploying such an edit.
    companions = [c for c in kit.companions if c.name.casefold() != name.casefold()]
    companion = rng.choice(companions or list(kit.companions))  # a child called Pip gets Nova
    quest = rng.choice(kit.quests)
    challenges = rng.sample(kit.challenges, len(kit.challenges))
    sights = rng.sample(kit.sights, len(kit.sights))
    style = rng.choice(kit.styles)
    title_template = rng.choice(quest.titles)
    closing = rng.choice(_CLOSINGS)

    ctx: dict[str, str] = {"name": name, "name_s": f"{name}’s"}
    ctx.update(kit.facts)
    ctx.update(companion.facts())
    ctx["q_fixed_s"] = quest.fixed_simple
    ctx["q_fixed_r"] = quest.fixed_rich
    for letter, (simple, rich) in zip("ABCDEF", sights, strict=True):
        ctx[f"sight{letter}_s"] = simple
        ctx[f"sight{letter}_r"] = rich

    passages: dict[str, Passage] = dict(_GENERIC)
    passages.update(
        opening=kit.opening, call=kit.call, journey=kit.journey, arrival=kit.arrival,
        quest=quest.quest, low_point=quest.low, solution=quest.solution,
        challenge_1=challenges[0], challenge_2=challenges[1], challenge_3=challenges[2],
        challenge_4=challenges[3], closing=closing,
    )
    passages["return"] = kit.home

    band = age_band(req.child_age)
    n = req.page_count
    by_rank = sorted(range(len(SLOTS)), key=lambda i: SLOTS[i].rank)
    kept = sorted(by_rank[:n])
    folded: dict[int, list[int]] = {k: [] for k in kept}
    for i in range(len(SLOTS)):
        if i not in folded:
            # Nearest kept page; a tie goes to the earlier page (the story has moved on less).
            folded[min(kept, key=lambda k: (abs(k - i), k))].append(i)

    pages = tuple(
        _compose_page(page_no, k, folded[k], passages, band, ctx,
                      random.Random(f"{req.seed}:{n}:{page_no}"))
        for page_no, k in enumerate(kept, start=1)
    )
    return StoryPlan(title=title_with_name(_fill(title_template, ctx), name), style=style, pages=pages)


def _compose_page(page_no: int, own: int, folded: list[int], passages: dict[str, Passage],
                  band: AgeBand, ctx: dict[str, str], rng: random.Random) -> PlannedPage:
    """One page: its slot's sentences plus the gists of the slots folded into it, sized to
    the age band (a target drawn inside the band, so pages vary in length like a real book)."""
    own_passage = passages[SLOTS[own].key]
    sentences = [_fill(s, ctx) for s in (own_passage.rich if band.rich else own_passage.simple)]
    ending_tpl = own_passage.ending_rich if band.rich else own_passage.ending_simple
    ending = _fill(ending_tpl, ctx) if ending_tpl else ""
    is_climax = SLOTS[own].key == "solution"
    if is_climax and not ending:
        ending = sentences.pop()  # the line where the problem is solved is never cut
    lo, hi = band.min_words, band.max_words
    target = rng.randint(lo + (hi - lo) * 2 // 5, hi - (hi - lo) // 10)

    # The page's own passage goes first: the whole target for the climax (the child's own
    # solution is the heart of the book), a third of the band's minimum for other pages, so
    # a crowded page (a short book) still shows its own scene, not just summaries.
    own_min = target if is_climax else lo // 3
    total, used = _words(ending), 0
    while used < len(sentences) and (
        used == 0 or (total < own_min and total + _words(sentences[used]) <= hi)
    ):
        total += _words(sentences[used])
        used += 1
    # Folded slots carry the plot (a 3-page story still needs its call and its solution), so
    # their gists go in next, most important first, as long as the page stays in the band.
    gists: dict[int, str] = {}
    for i in sorted((i for i in folded if SLOTS[i].foldable), key=lambda i: SLOTS[i].rank):
        passage = passages[SLOTS[i].key]
        gist = _fill(passage.gist_rich if band.rich else passage.gist_simple, ctx)
        if total + _words(gist) <= hi:
            gists[i] = gist
            total += _words(gist)
    # Then more of the page's own passage, in order, up to the target.
    while used < len(sentences) and total < target:
        if total + _words(sentences[used]) > hi:
            break
        total += _words(sentences[used])
        used += 1

    parts: list[str] = []
    beats: list[str] = []
    for i in sorted([own, *gists]):
        if i == own:
            parts.append(" ".join([*sentences[:used], *([ending] if ending else [])]))
        else:
            parts.append(gists[i])
            beats.append(_fill(passages[SLOTS[i].key].beat, ctx))
    text = capitalize_name(" ".join(parts), ctx["name"])  # "mia" starts a sentence as "Mia"
    if total < lo or total > hi:
        # Material is tested against every band; this only fires for extreme names
        # (e.g. a name of many words), where a slightly long or short page is fine.
        log.info("page %d has %d words, outside %d-%d", page_no, total, lo, hi)
    beat = f"{SLOTS[own].label}: {_fill(own_passage.beat, ctx)}"
    if beats:
        beat += f" (also: {'; '.join(beats)})"
    slots = tuple(SLOTS[i].key for i in sorted([own, *gists]))
    return PlannedPage(beat=beat, text=text, own=SLOTS[own].key, slots=slots)


# --------------------------------------------------------------------------------------
# The StoryWriter
# --------------------------------------------------------------------------------------


class LocalStoryWriter:
    """StoryWriter that writes from hand-written material: offline, instant, deterministic."""

    def write_outline(self, req: StoryRequest) -> Outline:
        """Title, one beat per page and a visual style note, all from the story's seed."""
        plan = plan_story(req)
        return Outline(title=plan.title, beats=tuple(p.beat for p in plan.pages),
                       style=plan.style)

    def write_page(self, req: PageRequest) -> str:
        """The text of one page. Depends only on the request: pages are written in parallel."""
        n = len(req.outline.beats)
        if not 1 <= req.page_number <= n:
            raise ValueError(f"page_number {req.page_number} is outside 1..{n}")
        if n != req.story.page_count:
            raise ValueError(
                f"the outline has {n} beats but the story asks for {req.story.page_count} pages"
            )
        page = plan_story(req.story).pages[req.page_number - 1]
        if req.outline.beats[req.page_number - 1] != page.beat:
            # An outline from another writer or an older version of this material: the page
            # still fits the story (same seed, same choices), but say so for whoever debugs it.
            log.warning("page %d: outline beat differs from this writer's plan",
                        req.page_number)
        return page.text
