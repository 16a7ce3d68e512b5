"""Turn a free-text model reply into a maze action, or None for "invalid"."""

from __future__ import annotations

import re

CARDINAL_LETTERS = ("N", "E", "S", "W")
RELATIVE_LETTERS = ("U", "R", "D", "L")
CARDINAL_WORDS = ("north", "east", "south", "west")
RELATIVE_WORDS = ("up", "right", "down", "left")

_STRIP = " \t\r\n.,;:!?\"'`*()[]{}<>_-"


def parse_action(reply: str, phrasing: str = "cardinal") -> int | None:
    """Return 0..3 (N, E, S, W) for a reply naming exactly one direction, else None.

    A bare letter or word is accepted in any case ("n", "North."); inside a sentence
    only capital letters count as letters (so "I" or "a" never do), full words count
    in any case, and a reply naming two different directions is invalid.
    """
    letters, words = (
        (CARDINAL_LETTERS, CARDINAL_WORDS) if phrasing == "cardinal" else (RELATIVE_LETTERS, RELATIVE_WORDS)
    )
    text = reply.strip(_STRIP)
    if not text:
        return None
    lowered = text.lower()
    for i, (letter, word) in enumerate(zip(letters, words)):
        if lowered in (letter.lower(), word):
            return i
    found: set[int] = set()
    for token in re.findall(r"[A-Za-z]+", text):
        for i, (letter, word) in enumerate(zip(letters, words)):
            if token == letter or token.lower() == word:
                found.add(i)
    return found.pop() if len(found) == 1 else None
