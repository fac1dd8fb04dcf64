"""The rules for a display name: what is stored, and what is refused with a reason."""

from __future__ import annotations

import unicodedata
from typing import Any, Final

from .gallery_types import GalleryError

MAX_NAME_LENGTH: Final = 200


#: Letters and symbols by category that show nothing: the Hangul fillers and the blank Braille
#: pattern (the usual ways to make an "empty" name look filled).
_BLANK_CHARACTERS: Final = frozenset("\u115f\u1160\u3164\uffa0\u2800")


#: Characters that reorder the text around them (the bidi embeddings, overrides and isolates,
#: and the direction marks): "\u202eevil" shows as "live". Names in right-to-left scripts
#: display right without them.
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                  "\u2066\u2067\u2068\u2069")


def name_key(name: str) -> str:
    """What two names are compared by: "ALEX  lacamoire" and "Alex Lacamoire" are one name
    (case folded, compatibility characters folded: the full-width "Ａｌｅｘ" is "alex")."""
    return unicodedata.normalize("NFKC", name).casefold()


def _invisible(ch: str) -> bool:
    """Shows nothing on its own: a format character (Cf: zero-width space and joiners, BOM,
    word joiner, bidi marks), a combining mark, or a blank filler."""
    return unicodedata.category(ch) in ("Cf", "Mn", "Me") or ch in _BLANK_CHARACTERS


def clean_name(name: Any) -> str:
    """A display name as it is stored, or GalleryError saying what is wrong with it.

    Whitespace is trimmed and every inner run of it becomes one space; format characters at
    either end are trimmed too (they show nothing there; inside, joiners build emoji and
    ZWNJ spells Persian). Refused: no visible character (only whitespace, format characters,
    combining marks or blank fillers), a control character (Unicode Cc: NUL, ESC, DEL, C1;
    tab and newline count as whitespace), a bidirectional control (U+202E and its kin), an
    unpaired surrogate or U+FFFD (text that was not valid UTF-8 on its way here), more than
    ``MAX_NAME_LENGTH`` characters."""
    if name is None:
        raise GalleryError("name is required")
    if not isinstance(name, str):
        raise GalleryError("name must be a string")
    name = " ".join(name.split())
    if not name:
        raise GalleryError("name is required")
    for ch in name:
        category = unicodedata.category(ch)
        if category == "Cc":
            raise GalleryError(f"name contains a control character (U+{ord(ch):04X})")
        if category == "Cs":
            raise GalleryError(f"name contains an unpaired surrogate (U+{ord(ch):04X}); "
                               "send valid Unicode text")
        if ch in _BIDI_CONTROLS:
            raise GalleryError(f"name contains a bidirectional control character "
                               f"(U+{ord(ch):04X}), which changes how the text around it "
                               "displays; right-to-left names need none")
        if ch == "\ufffd":
            raise GalleryError("name contains U+FFFD, the replacement character: it was not "
                               "valid UTF-8 text when it was sent")
    if all(ch == " " or _invisible(ch) for ch in name):
        only = ", ".join(f"U+{ord(ch):04X}" for ch in sorted(set(name) - {" "}))
        raise GalleryError(f"name has no visible characters (only {only})")
    name = name.strip(" " + "".join({ch for ch in name if unicodedata.category(ch) == "Cf"}))
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"name is longer than {MAX_NAME_LENGTH} characters")
    return name

