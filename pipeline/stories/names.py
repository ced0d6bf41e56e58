"""The child's name in sentences: capitalized where English capitalizes any word (the start of a
sentence, a title), left exactly as the parent typed it everywhere else.

A name typed "mia" starts a sentence as "Mia"; "McKenzie", "de la Cruz" or "DeShawn" keep their
own capitals mid-sentence (only the first letter of a sentence-initial name changes: "De la
Cruz"). Scripts without case (Arabic, CJK, Devanagari, ...) are unchanged: ``str.title`` of
their letters is the letter itself. Unicode's titlecase mapping is used for the first letter
(so "ǆ" becomes "ǅ", as the Unicode Standard's section 3.13 asks).
"""
from __future__ import annotations

_OPENING = "\"'“‘«‹([¿¡"
_CLOSING = "\"'”’»›)]"
_SENTENCE_END = ".!?…"


def _upper_first(name: str) -> str:
    return name[:1].title() + name[1:] if name[:1].islower() else name


def _starts_sentence(text: str, i: int) -> bool:
    """Whether position ``i`` of ``text`` begins a sentence (or quoted speech)."""
    j = i
    while j > 0 and text[j - 1] in _OPENING:
        j -= 1
    if j == 0 or j < i:  # the text's start, or right after an opening quote
        return True
    if not text[j - 1].isspace():
        return False
    while j > 0 and text[j - 1].isspace():
        j -= 1
    if j == 0:
        return True
    while j > 0 and text[j - 1] in _CLOSING:
        j -= 1
    return j > 0 and text[j - 1] in _SENTENCE_END


def capitalize_name(text: str, name: str) -> str:
    """``text`` with each occurrence of ``name`` that starts a sentence capitalized.

    >>> capitalize_name("mia packed. Then mia ran. “mia!” said Mom.", "mia")
    'Mia packed. Then mia ran. “Mia!” said Mom.'
    """
    if not name or name == _upper_first(name):
        return text
    out: list[str] = []
    pos = 0
    while (i := text.find(name, pos)) >= 0:
        out.append(text[pos:i])
        out.append(_upper_first(name) if _starts_sentence(text, i) else name)
        pos = i + len(name)
    out.append(text[pos:])
    return "".join(out)


def title_with_name(title: str, name: str) -> str:
    """A book title with the name's first letter capitalized wherever it appears (a title
    capitalizes its proper nouns), and the title's own first letter.

    >>> title_with_name("mia and the Moon Lantern", "mia")
    'Mia and the Moon Lantern'
    """
    if name and name != _upper_first(name):
        title = title.replace(name, _upper_first(name))
    return _upper_first(title)
