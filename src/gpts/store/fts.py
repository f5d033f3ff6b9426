"""Text as SQLite's full-text index sees it, for every language the store holds.

FTS5's unicode61 tokenizer splits words at spaces and punctuation, so Chinese and Japanese, which put no spaces
between words, would be indexed as one "word" per sentence and never match a question. As Lucene's CJK analyzer
does, a run of CJK characters is indexed as its overlapping character pairs (中文字 -> 中文 文字), and a query is
cut the same way; BM25 then ranks by the pairs in common. Other text is left to unicode61 (lowercase, no accents).
"""

from __future__ import annotations

import re

# Han (with extension A and compatibility ideographs), kana, Hangul syllables.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u309f\u30a0-\u30ff\uac00-\ud7af"
_CJK_RUN = re.compile(f"[{_CJK}]+")
# A word is a CJK run, or a run of other letters and digits: \w alone would also take in the CJK characters after
# a number or a Latin name ("2015年的灯笼节", "KX型电水壶") and make one term that the index never holds.
_WORD = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+", re.UNICODE)

# Words that carry no meaning in a question; left out of queries (never out of the index) so that BM25 weighs the
# words that do.
STOPWORDS = frozenset("""
a an and are as at be by can could did do does for from had has have how i if in is it its me my of on or our
should so than that the their them then there these they this to us was we were what when where which who whom
why will with would you your about into tell please
""".split())


def _pairs(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i:i + 2] for i in range(len(run) - 1)]


def index_terms(text: str) -> str:
    """The text to put in an FTS5 column: CJK runs as character pairs, the rest unchanged."""
    return _CJK_RUN.sub(lambda m: f" {' '.join(_pairs(m[0]))} ", text)


def query_terms(text: str) -> list[str]:
    """The terms of a free-text query: its words (stopwords dropped, unless nothing else is left) and the character
    pairs of its CJK runs, each once, in order."""
    words: list[str] = []
    for match in _WORD.finditer(text.lower()):
        token = match[0]
        words.extend(_pairs(token) if _CJK_RUN.fullmatch(token) else [token])
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))


def match_expression(text: str, column: str | None = None, prefix: bool = False) -> str | None:
    """An FTS5 MATCH expression for a free-text query (any term may match; BM25 ranks those with more, rarer
    ones first), or None when the query has no words. Every term is quoted: a user's text is never FTS5 syntax.
    With `prefix`, a last word still being typed (nothing after it) matches the words it starts: search as you type
    finds "haiku" at "hai"."""
    terms = query_terms(text)
    if not terms:
        return None
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms]
    last = _WORD.findall(text.lower())[-1] if prefix else ""
    if prefix and text[-1:].isalnum() and not _CJK_RUN.fullmatch(last) and terms[-1] == last:
        quoted[-1] += "*"
    expression = " OR ".join(quoted)
    return f"{column} : ({expression})" if column else expression
