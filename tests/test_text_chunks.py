"""The sentence splitter that keeps each Parler-TTS generation short: no model, no server."""

from __future__ import annotations

import re

import pytest

from genmedia.text_chunks import MAX_PIECE_CHARS, sentences, split_for_speech

SENTENCES = [
    f"Sentence {number} tells a {'very ' * (number % 5)}long story about the sea and the boats on it!"
    if number % 3 == 0
    else f"Is sentence {number} a question about {'many ' * (number % 4)}things?"
    if number % 3 == 1
    else f"Sentence {number} is plain, with a comma {'and more words ' * (number % 6)}in it."
    for number in range(1, 40)
]


def words(text: str) -> list[str]:
    return text.split()


def test_short_text_is_one_piece():
    assert split_for_speech("Hello there. How are you?") == ["Hello there. How are you?"]


def test_whitespace_is_collapsed_and_no_piece_is_empty():
    assert split_for_speech("  Hello\n   there.\t\tHow  are you?  ") == ["Hello there. How are you?"]


def test_long_text_is_split_only_at_sentence_ends_within_budget():
    text = " ".join(SENTENCES)
    assert len(text) > 4 * MAX_PIECE_CHARS

    pieces = split_for_speech(text)

    assert len(pieces) > 1
    assert all(len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    # Every piece is a run of whole sentences.
    ends = {len(" ".join(SENTENCES[: count + 1])) for count in range(len(SENTENCES))}
    position = 0
    for piece in pieces:
        position += len(piece)
        assert position in ends, f"piece does not end a sentence: {piece[-40:]!r}"
        position += 1  # the space that joined it to the next piece


def test_no_sentence_or_word_is_dropped_or_reordered():
    text = "\n".join(SENTENCES)

    assert words(" ".join(split_for_speech(text))) == words(text)


def test_sentences_are_packed_into_as_few_pieces_as_fit():
    pieces = split_for_speech(" ".join(SENTENCES))

    for piece, following in zip(pieces, pieces[1:], strict=False):
        next_sentence = sentences(following)[0]
        assert len(piece) + 1 + len(next_sentence) > MAX_PIECE_CHARS


def test_over_long_sentence_is_split_after_commas():
    clauses = [f"clause {number} of a sentence that never seems to stop" for number in range(20)]
    sentence = ", ".join(clauses) + "."
    assert len(sentence) > 2 * MAX_PIECE_CHARS

    pieces = split_for_speech(sentence)

    assert all(len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    assert all(piece.endswith(",") for piece in pieces[:-1])
    assert words(" ".join(pieces)) == words(sentence)


def test_over_long_clause_is_split_between_words():
    sentence = " ".join(f"word{number}" for number in range(150))
    assert len(sentence) > 2 * MAX_PIECE_CHARS

    pieces = split_for_speech(sentence)

    assert len(pieces) > 1
    assert all(len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    assert words(" ".join(pieces)) == words(sentence)


def test_a_word_longer_than_a_piece_is_cut_at_the_budget():
    url = "https://example.com/" + "a" * (2 * MAX_PIECE_CHARS)

    pieces = split_for_speech(f"See {url} now.")

    assert all(len(piece) <= MAX_PIECE_CHARS for piece in pieces)
    assert "".join(pieces).replace(" ", "") == f"See{url}now."


def test_abbreviations_initials_and_decimals_do_not_end_sentences():
    text = "Dr. Smith met J. R. Tolkien, e.g. at 3.30 in St. Albans. Then he left! Did I? Yes."

    assert sentences(text) == [
        "Dr. Smith met J. R. Tolkien, e.g. at 3.30 in St. Albans.",
        "Then he left!",
        "Did I?",
        "Yes.",
    ]


def test_closing_quotes_stay_with_their_sentence_and_blank_lines_end_one():
    text = 'He said "stop." She did not.\n\nA heading without a period\n\nA line wrapped\nin two.'

    assert sentences(text) == [
        'He said "stop."',
        "She did not.",
        "A heading without a period",
        "A line wrapped in two.",
    ]


@pytest.mark.parametrize("budget", [20, 60, 250])
def test_every_budget_is_respected_without_losing_words(budget):
    text = " ".join(SENTENCES[:12])

    pieces = split_for_speech(text, budget)

    assert all(0 < len(piece) <= budget for piece in pieces)
    assert words(" ".join(pieces)) == words(text)
    assert not any(re.match(r"\s", piece) or piece != piece.strip() for piece in pieces)
