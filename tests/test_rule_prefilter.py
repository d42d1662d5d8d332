"""Keyword rules skip the regex engine when a cheap substring test proves no match: the votes
must be exactly those of the regex on every kind of text (case, non-ASCII, punctuation keywords)."""
import pytest

from modeling import training

KEYWORDS = ["nlp", "c++", "gpt-2", "natural language", "Straße", "k8s", "a.b"]
TEXTS = [
    "NLP with C++ and GPT-2", "natural  language", "Natural Language models", "strasse STRASSE Straße",
    "kelvin \u212a8s", "K8S cluster", "axb", "a.b", "nlpx c++x", "", "ünïcödé nlp", "gpt-2x gpt-2",
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_shortcut_votes_exactly_as_the_regex(text):
    rules = {"yes": [training.keyword_pattern(k) for k in KEYWORDS] + [r"c\+\+|rust"], "no": []}
    model = training.KeywordRules(rules).fit(["x", "y"], ["yes", "no"])
    folded = text.lower() if text.isascii() else None

    by_regex = [sum(1 for p in ps if model._matches(p, text)) for ps in model.patterns_]

    assert model._votes(text) == by_regex
    for pattern in model.patterns_[0]:
        if not training._may_match(pattern.pattern, folded):
            assert training.search_bounded(pattern, text) is None


def test_only_plain_ascii_keywords_take_the_shortcut():
    assert training._ascii_keyword(training.keyword_pattern("gpt-2")) == "gpt-2"
    assert training._ascii_keyword(training.keyword_pattern("Straße")) is None
    assert training._ascii_keyword(r"(?<!\w)a.b(?!\w)") is None  # a regex dot, not a literal
    assert training._ascii_keyword(r"c\+\+|rust") is None
