"""Small text utilities shared by objectives."""
from __future__ import annotations

import re

# A regex splitter rather than nltk's punkt: punkt needs a data download that fails offline, and
# SummaC-style scoring only needs sentence-sized units, not perfect boundaries.
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, empty ones dropped.

    >>> split_sentences("A cat. A dog!  Why?")
    ['A cat.', 'A dog!', 'Why?']
    """
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def words(text: str) -> list[str]:
    """Lower-cased whitespace tokens (the unit of distinct-n)."""
    return text.lower().split()
