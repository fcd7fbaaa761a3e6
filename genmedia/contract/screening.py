"""Prompt screening: terms a deployment refuses in prompts (`BLOCKED_PROMPT_TERMS_FILE`), checked before any GPU.

The file holds one term a line (`#` starts a comment). A term matches whole words, case-insensitively: `gore`
matches "Gore" and "gore," but not "gorent". A `*` stands for any letters within a word (`nud*` matches
"nude" and "nudity"), and a space between words for any run of spaces or punctuation ("blood bath" matches
"blood-bath").

Both the terms and each prompt are reduced to the same skeleton before matching, so look-alike letters do not
slip through: compatibility forms folded (NFKC: fullwidth `ｇｏｒｅ`, mathematical `𝐠𝐨𝐫𝐞`), invisible
format characters removed (zero-width spaces, soft hyphens), accents and other combining marks dropped, and
each character replaced by its prototype from Unicode's confusables table (UTS #39, as shipped by the
`confusables` package): Cyrillic `о` and Greek `ο` become Latin `o`. What is not caught: spelling out
(`g o r e`), leetspeak beyond what looks alike (`g0r3`), misspellings, other languages, and meaning: this is
a cheap screen for a public page, not a classifier.

The check runs as a pydantic validator on the prompt fields of the request types, so every route that takes a
prompt refuses a blocked one with a 400 naming the field (never the term, which would teach the list).
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import unicodedata
from pathlib import Path

from pydantic_core import PydanticCustomError

from genmedia import logger
from genmedia.metrics import metrics
from genmedia.settings import SettingsError, get_settings

REFUSAL = "contains a term this service does not accept; rephrase it"


@functools.cache
def prototypes() -> dict[str, str]:
    """Unicode's confusables (UTS #39): each look-alike character and the prototype it is confusable with."""
    table = importlib.metadata.distribution("confusables").locate_file("confusables/assets/confusables.txt")
    mapping = {}
    for line in Path(table).read_text(encoding="utf-8-sig").splitlines():
        source, separator, rest = line.partition(";")
        if not separator or line.startswith("#"):
            continue
        target = rest.partition(";")[0]
        mapping[chr(int(source, 16))] = "".join(chr(int(point, 16)) for point in target.split())
    return mapping


def skeleton(text: str) -> str:
    """`text` as the screen compares it: folded, unmarked, each look-alike replaced by its prototype."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    visible = "".join(character for character in folded if unicodedata.category(character) != "Cf")
    table = prototypes()
    mapped = "".join(table.get(character, character) for character in without_marks(visible))
    return without_marks(mapped).casefold()


def without_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(character for character in decomposed if not unicodedata.combining(character))


def term_pattern(term: str) -> str | None:
    """The regular expression of one term line, over skeletons; None when the line names no word."""
    tokens = re.findall(r"\*|\w+|[^\w*]+", skeleton(term))
    while tokens and not re.match(r"[\w*]", tokens[0]):
        tokens.pop(0)
    while tokens and not re.match(r"[\w*]", tokens[-1]):
        tokens.pop()
    if not any(re.match(r"\w", token) for token in tokens):
        return None
    parts = [r"\w*" if token == "*" else re.escape(token) if re.match(r"\w", token) else r"\W+" for token in tokens]
    return rf"(?<!\w){''.join(parts)}(?!\w)"


class PromptScreen:
    """The blocked terms of one file, compiled into one expression over skeletons."""

    def __init__(self, terms: list[str]):
        patterns = []
        for number, line in enumerate(terms, start=1):
            term = line.strip()
            if not term or term.startswith("#"):
                continue
            pattern = term_pattern(term)
            if pattern is None:
                raise ValueError(f"line {number} ({term!r}) has no letters or digits to match")
            patterns.append(pattern)
        self.size = len(patterns)
        self.expression = re.compile("|".join(patterns)) if patterns else None

    @classmethod
    def from_file(cls, path: Path) -> PromptScreen:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise SettingsError(f"BLOCKED_PROMPT_TERMS_FILE={str(path)!r} cannot be read: {error}") from None
        try:
            return cls(lines)
        except ValueError as error:
            raise SettingsError(f"BLOCKED_PROMPT_TERMS_FILE={str(path)!r}: {error}") from None

    def blocks(self, text: str) -> bool:
        return self.expression is not None and self.expression.search(skeleton(text)) is not None


@functools.cache
def prompt_screen() -> PromptScreen | None:
    """The process's screen, from `BLOCKED_PROMPT_TERMS_FILE` read once; None when it is not set."""
    path = get_settings().blocked_prompt_terms_file
    if path is None:
        return None
    screen = PromptScreen.from_file(path)
    logger.info("prompt screen: %d blocked term(s) from %s", screen.size, path)
    return screen


def screened(text: str, info) -> str:
    """Pydantic after-validator of prompt fields: refuse a prompt that holds a blocked term."""
    screen = prompt_screen()
    if screen is not None and text and screen.blocks(text):
        field = info.field_name or "prompt"
        metrics().prompts_refused.labels(field).inc()
        raise PydanticCustomError("blocked_term", REFUSAL)
    return text
