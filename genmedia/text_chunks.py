"""Split text for speech into pieces short enough for one Parler-TTS generation, at the most natural breaks.

Parler-TTS was trained on clips of at most 30 s and stops early or drifts past ~20 s of audio in one
generation (parler-tts#126). So long text is spoken piece by piece, and each piece must end where a reader
would pause anyway: at the end of a sentence; inside a sentence too long for one piece, after a comma (or ; : —);
inside a clause too long for one piece, between words. No word is dropped, reordered or cut, except a single
"word" longer than a whole piece (a pasted URL or hash), which is cut at the budget.

Sentence ends are `.`, `!`, `?` or `…` (with any closing quotes or brackets) followed by whitespace, and blank
lines. A period after a common abbreviation ("Dr.", "e.g.") or a single initial ("J. Smith") is not a sentence
end; a period inside a number ("3.14") is not followed by whitespace, so it never is one.

Pure Python, no model: the speech service calls `split_for_speech`, and the tests check it directly.
"""

from __future__ import annotations

import re

# About 15-20 s of speech at a normal pace (12-16 characters a second), safely inside Parler's 30 s clips.
MAX_PIECE_CHARS = 250

# Words whose trailing period does not end a sentence (compared lower-case, without the period).
# Words that often end sentences too ("etc", "no") are left out: a wrong split only adds a short pause.
ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e", "cf", "approx"),
        *("fig", "figs", "vol", "inc", "ltd", "corp", "dept"),
        *("jan", "feb", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
    }
)

# A candidate sentence end: terminal punctuation, closing quotes/brackets, then whitespace.
SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)")
# A clause end inside a sentence: the punctuation stays with the clause before it.
CLAUSE_END = re.compile(r"[,;:—]+(?=\s)")
PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def split_for_speech(text: str, max_chars: int = MAX_PIECE_CHARS) -> list[str]:
    """`text` as pieces of at most `max_chars` characters, whitespace collapsed, split at natural breaks.

    Whole sentences are packed greedily into each piece, so a short text stays one piece and a long one
    becomes as few pieces as the budget allows. Joining the pieces with spaces gives back the text's words,
    in order.
    """
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    units: list[str] = []
    for sentence in sentences(text):
        units.extend(fit(sentence, max_chars))
    return pack(units, max_chars)


def sentences(text: str) -> list[str]:
    """The sentences of `text`, whitespace collapsed, each with its closing punctuation."""
    found: list[str] = []
    for paragraph in PARAGRAPH_BREAK.split(text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in SENTENCE_END.finditer(paragraph):
            if match.group().startswith(".") and is_abbreviation(paragraph[start : match.start()]):
                continue
            found.append(paragraph[start : match.end()].strip())
            start = match.end()
        if rest := paragraph[start:].strip():
            found.append(rest)
    return [sentence for sentence in found if sentence]


def is_abbreviation(before_period: str) -> bool:
    """Whether the word ending `before_period` is an abbreviation or an initial, not a sentence's last word."""
    words = before_period.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'“‘([")
    is_initial = len(word) == 1 and word.isupper() and word != "I"
    return is_initial or word.lower() in ABBREVIATIONS


def fit(sentence: str, max_chars: int) -> list[str]:
    """`sentence` as one piece if it fits, else at clause ends, else between words, else cut (one huge word)."""
    if len(sentence) <= max_chars:
        return [sentence]
    clauses = split_after(CLAUSE_END, sentence)
    if len(clauses) > 1:
        return pack([piece for clause in clauses for piece in fit(clause, max_chars)], max_chars)
    words = sentence.split()
    if len(words) > 1:
        return pack([piece for word in words for piece in fit(word, max_chars)], max_chars)
    return [sentence[i : i + max_chars] for i in range(0, len(sentence), max_chars)]


def split_after(pattern: re.Pattern[str], text: str) -> list[str]:
    """`text` split just after each match of `pattern`, the parts stripped."""
    parts, start = [], 0
    for match in pattern.finditer(text):
        parts.append(text[start : match.end()].strip())
        start = match.end()
    parts.append(text[start:].strip())
    return [part for part in parts if part]


def pack(units: list[str], max_chars: int) -> list[str]:
    """Consecutive `units` (each within budget) joined with spaces into as few pieces as fit in `max_chars`."""
    pieces: list[str] = []
    for unit in units:
        if pieces and len(pieces[-1]) + 1 + len(unit) <= max_chars:
            pieces[-1] = f"{pieces[-1]} {unit}"
        else:
            pieces.append(unit)
    return pieces
