"""Caption text rules: the trigger exactly once, boilerplate cleanup, WD14 tag formatting, token counting, TSV."""

from __future__ import annotations

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from orchestrator.captions.cleanup import clean_caption
from orchestrator.captions.review import Entry, from_tsv, to_tsv
from orchestrator.captions.tokens import USABLE, TokenCounter, estimate_tokens
from orchestrator.captions.trigger import apply_trigger, has_trigger
from orchestrator.captions.wd14 import Tag, format_tag, select_tags

captions = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)
# realistic triggers: words of letters and digits in any script ("ohwx person", "sks 人物"); captions are anything
words = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=8)
triggers = st.lists(words, min_size=1, max_size=3).map(" ".join)
separators = st.sampled_from([", ", " ", ": ", "，", " | "])


@given(caption=captions, trigger=triggers, separator=separators)
def test_trigger_is_idempotent(caption: str, trigger: str, separator: str) -> None:
    once = apply_trigger(caption, trigger, separator)
    assert apply_trigger(once, trigger, separator) == once
    # either left alone, or the trigger put in front exactly once
    assert once in (caption.strip(), f"{trigger}{separator}{caption.strip()}", trigger)
    assert has_trigger(once, trigger, separator)


@given(caption=captions, trigger=triggers)
@example(caption="!", trigger="0")  # found by hypothesis: cleanup once joined "0, !" into "0,!"
def test_trigger_after_cleanup_is_idempotent(caption: str, trigger: str) -> None:
    assume(clean_caption(trigger) == trigger)  # e.g. a trigger "arafed" would itself be cleaned away
    once = apply_trigger(clean_caption(caption), trigger)
    assert apply_trigger(clean_caption(once), trigger) == once


def test_trigger_rules() -> None:
    assert apply_trigger("a man in a hat", "ohwx person") == "ohwx person, a man in a hat"
    assert apply_trigger("ohwx person, a man", "ohwx person") == "ohwx person, a man"
    assert apply_trigger("a photo of OHWX Person smiling", "ohwx person") == "a photo of OHWX Person smiling"
    assert apply_trigger("ohwxman at the beach", "ohwx") == "ohwx, ohwxman at the beach"  # whole phrase only
    assert apply_trigger("a man", "  ohwx   person ") == "ohwx person, a man"
    assert apply_trigger("a man", "ohwx", separator=" ") == "ohwx a man"
    assert apply_trigger("", "ohwx") == "ohwx"
    assert apply_trigger("a painting", None) == "a painting"  # style LoRAs need no trigger
    assert apply_trigger("a painting", "   ") == "a painting"


def test_unicode_trigger_and_caption() -> None:
    text = apply_trigger("женщина в красной шляпе 🎩", "sks 人物", separator="，")
    assert text == "sks 人物，женщина в красной шляпе 🎩"
    assert apply_trigger(text, "sks 人物", separator="，") == text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The image shows a man in a red hat.", "a man in a red hat."),
        ("This image depicts  a cat\non a sofa", "a cat on a sofa"),
        ("In this image, we can see a woman smiling", "a woman smiling"),
        ("arafed man in a suit , standing", "man in a suit, standing"),
        ("araffe woman with a hat", "woman with a hat"),
        ("<s>a dog</s><pad><pad>", "a dog"),
        ("The image shows there is a lamp", "a lamp"),
        ("a\tcat\x03 on\u00a0a mat", "a cat on a mat"),
        ("a photo of a man", "a photo of a man"),  # descriptive words are kept
        ("Café scene with 🍰", "Café scene with 🍰"),
    ],
)
def test_cleanup(raw: str, clean: str) -> None:
    assert clean_caption(raw) == clean


def test_wd14_tag_formatting_and_thresholds() -> None:
    assert format_tag("red_hat") == "red hat"
    assert format_tag("astronaut_(character)") == r"astronaut \(character\)"
    assert format_tag("^_^") == "^_^"  # kaomoji keep their underscores
    tags = [Tag("general", 9), Tag("explicit", 9), Tag("smile", 0), Tag("red_hat", 0), Tag("miku_(vocaloid)", 4)]
    probs = [0.99, 0.98, 0.40, 0.90, 0.86]
    assert select_tags(tags, probs) == [r"miku \(vocaloid\)", "red hat", "smile"]  # ratings dropped
    assert select_tags(tags, probs, general_threshold=0.5, character_threshold=0.9) == ["red hat"]


def test_token_estimate_and_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LORAFORGE_CLIP_TOKENIZER", raising=False)
    assert estimate_tokens("a man in a red hat") == 8  # ceil(1.3 * 6)
    assert estimate_tokens("a man, smiling.") == 6
    counter = TokenCounter()  # no CLIP tokenizer in the isolated test home: the estimate is used
    long = ", ".join(["a very detailed description of a man"] * 12)
    assert counter(long) > USABLE
    assert counter.method == "estimated"


def test_token_count_with_a_real_clip_tokenizer(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers", reason="needs the caption extra: pip install -e '.[caption]'")
    from orchestrator.captions.tiny import build_clip_tokenizer

    monkeypatch.setenv("LORAFORGE_CLIP_TOKENIZER", str(build_clip_tokenizer(tmp_path / "clip")))
    counter = TokenCounter()
    assert counter("a man") == 3  # short captions are only estimated: no tokenizer load
    assert counter.method == "estimated"
    text = "x" * 100 + " man"  # one "word" the estimate counts as 2; this character-level tokenizer as 104
    assert estimate_tokens(text) <= USABLE
    text = ", ".join([text] * 20)
    assert counter(text) == len(text.replace(" ", ""))
    assert counter.method == "CLIP tokenizer"


@given(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text(max_size=40)), max_size=8))
def test_tsv_round_trip(rows: list[tuple[str, str]]) -> None:
    rows = [(f"img{i}_{name}.jpg", caption) for i, (name, caption) in enumerate(rows)]
    parsed = from_tsv(to_tsv([Entry(name, caption) for name, caption in rows]))
    assert parsed == dict(rows)
