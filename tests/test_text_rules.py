"""The rules for user text: sanitising, lengths, emoji and mentions, as tables."""

from __future__ import annotations

import emoji
import pytest

from threadline.errors import BadInput, ErrorCode
from threadline.services.text_rules import (
    MAX_DISTINCT_REACTIONS,
    check_client_id,
    check_emoji,
    clean_body,
    clean_description,
    clean_display_name,
    clean_search,
    clean_title,
    has_unstorable_chars,
    mentioned_usernames,
    name_readings,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("hello", "hello", id="plain text unchanged"),
        pytest.param("e\u0301", "\u00e9", id="NFC composes e + combining acute"),
        pytest.param("Ame\u0301lie", "Am\u00e9lie", id="NFC inside a word"),
        pytest.param("e\x00\u0301", "\u00e9", id="control between letter and mark, then NFC"),
        pytest.param("a\x00b\x07c\x1bd\x7fe", "abcde", id="C0 controls and DEL removed"),
        pytest.param("a\x80b\x9fc", "abc", id="C1 controls removed"),
        pytest.param("a\x0bb\x0cc", "abc", id="vertical tab and form feed removed"),
        pytest.param("line one\nline two", "line one\nline two", id="newline kept"),
        pytest.param("col\tcol", "col\tcol", id="tab kept"),
        pytest.param("a\r\nb", "a\nb", id="CRLF becomes newline"),
        pytest.param("a\rb", "a\nb", id="lone CR becomes newline"),
        pytest.param("a\u2028b\u2029c\x85d", "a\nb\nc\nd", id="Unicode line breaks and NEL"),
        pytest.param("  \t hi \n ", "hi", id="surrounding whitespace trimmed"),
        pytest.param("\u3000hi\u00a0", "hi", id="Unicode spaces trimmed"),
        pytest.param("\u200bhi\u200b\u2060", "hi", id="zero-width characters at the edges trimmed"),
        pytest.param("a  \n\n  b", "a  \n\n  b", id="inner whitespace kept"),
        pytest.param(
            "invoice\u202efdp.exe", "invoicefdp.exe", id="bidi override removed (Trojan Source)"
        ),
        pytest.param("a\u202ab\u202cc\u2066d\u2069", "abcd", id="bidi embeddings, isolates out"),
        pytest.param(
            "\u05e9\u05dc\u05d5\u05dd\u200f!", "\u05e9\u05dc\u05d5\u05dd\u200f!", id="RLM kept"
        ),
        pytest.param("\ufeffhi", "hi", id="byte-order mark removed"),
        pytest.param("a\ud800b", "ab", id="lone surrogate removed"),
        pytest.param("👨\u200d👩\u200d👧 family", "👨\u200d👩\u200d👧 family", id="ZWJ kept"),
        pytest.param(
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
            id="ZWNJ kept",
        ),
        pytest.param(
            "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
            "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
            id="tag flag kept",
        ),
        pytest.param("x" * 4000, "x" * 4000, id="4000 characters accepted"),
        pytest.param(" " + "x" * 4000 + " ", "x" * 4000, id="length counted after trimming"),
        pytest.param("😀" * 4000, "😀" * 4000, id="length in code points, not UTF-16 or bytes"),
    ],
)
def test_clean_body_sanitises(raw: str, expected: str) -> None:
    assert clean_body(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message_part"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("   \n\t  ", "empty", id="whitespace only"),
        pytest.param("\x00\x01\u202e", "empty", id="controls only"),
        pytest.param("\u200b\u200d", "empty", id="zero-width only"),
        pytest.param("x" * 4001, "4001 characters, at most 4000", id="4001 characters"),
        pytest.param("e\u0301" * 4001, "4001 characters", id="over 4000 after NFC"),
    ],
)
def test_clean_body_refuses(raw: str, message_part: str) -> None:
    with pytest.raises(BadInput) as raised:
        clean_body(raw)
    assert raised.value.code is ErrorCode.BAD_USER_INPUT
    assert message_part in raised.value.message


@pytest.mark.parametrize("raw", ["", "  \n ", "\x00"])
def test_clean_body_allows_empty_with_attachments(raw: str) -> None:
    assert clean_body(raw, has_attachments=True) == ""


def test_clean_body_with_attachments_still_limits_length() -> None:
    with pytest.raises(BadInput):
        clean_body("x" * 4001, has_attachments=True)


def test_clean_body_counts_length_after_nfc() -> None:
    # 4000 "é" typed as e + combining acute are 8000 code points before NFC.
    assert clean_body("e\u0301" * 4000) == "\u00e9" * 4000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("Weekly sync", "Weekly sync", id="plain"),
        pytest.param("  Weekly sync  ", "Weekly sync", id="trimmed"),
        pytest.param("Weekly\nsync", "Weekly sync", id="newline becomes a space"),
        pytest.param("Weekly \r\n\t sync", "Weekly sync", id="line break run becomes one space"),
        pytest.param("Weekly\tsync", "Weekly sync", id="tab becomes a space"),
        pytest.param("Caf\u0065\u0301", "Caf\u00e9", id="NFC"),
        pytest.param("a\x00b", "ab", id="controls removed"),
        pytest.param("t" * 200, "t" * 200, id="200 characters accepted"),
    ],
)
def test_clean_title_accepts(raw: str, expected: str) -> None:
    assert clean_title(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param(" \n\t ", id="whitespace only"),
        pytest.param("t" * 201, id="201 characters"),
    ],
)
def test_clean_title_refuses(raw: str) -> None:
    with pytest.raises(BadInput):
        clean_title(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, None, id="none stays none"),
        pytest.param("", None, id="empty becomes none"),
        pytest.param("  \n ", None, id="whitespace becomes none"),
        pytest.param(" About\nthis thread ", "About\nthis thread", id="lines kept, trimmed"),
        pytest.param("d" * 2000, "d" * 2000, id="2000 characters accepted"),
    ],
)
def test_clean_description(raw: str | None, expected: str | None) -> None:
    assert clean_description(raw) == expected


def test_clean_description_refuses_2001_characters() -> None:
    with pytest.raises(BadInput, match="at most 2000"):
        clean_description("d" * 2001)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(" Ada Lovelace ", "Ada Lovelace", id="trimmed"),
        pytest.param("Ada\nLovelace", "Ada Lovelace", id="one line"),
        pytest.param("Zoe\u0308", "Zo\u00eb", id="NFC"),
        pytest.param("n" * 100, "n" * 100, id="100 characters accepted"),
    ],
)
def test_clean_display_name_accepts(raw: str, expected: str) -> None:
    assert clean_display_name(raw) == expected


@pytest.mark.parametrize("raw", ["", "   ", "\u202e", "n" * 101])
def test_clean_display_name_refuses(raw: str) -> None:
    with pytest.raises(BadInput):
        clean_display_name(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("👍", "👍", id="simple"),
        pytest.param(" 👍 ", "👍", id="trimmed"),
        pytest.param("👍🏽", "👍🏽", id="skin tone modifier"),
        pytest.param("👨\u200d👩\u200d👧", "👨\u200d👩\u200d👧", id="ZWJ family"),
        pytest.param("🏳️\u200d🌈", "🏳️\u200d🌈", id="ZWJ flag"),
        pytest.param("🇫🇷", "🇫🇷", id="regional indicator flag"),
        pytest.param("🏴󠁧󠁢󠁳󠁣󠁴󠁿", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", id="tag sequence flag"),
        pytest.param("1️⃣", "1️⃣", id="keycap"),
        pytest.param("1\u20e3", "1️⃣", id="keycap without VS16 is qualified"),
        pytest.param("❤️", "❤️", id="heart with VS16"),
        pytest.param("❤", "❤️", id="heart without VS16 is qualified"),
        pytest.param("👁\u200d🗨", "👁️\u200d🗨️", id="minimally qualified ZWJ sequence"),
        pytest.param("\U0001fae9", "\U0001fae9", id="recent emoji (Unicode 16)"),
        pytest.param("👍\u202e", "👍", id="controls cleaned before the check"),
        pytest.param("👍\ufe0f", "👍", id="redundant VS16 after an emoji-presentation emoji"),
        pytest.param("👍🏽\ufe0f", "👍🏽", id="redundant VS16 after a skin tone"),
        pytest.param("🇫🇷\ufe0f", "🇫🇷", id="redundant VS16 after a flag"),
        pytest.param("❤\ufe0e", "❤️", id="text presentation selector is the same emoji"),
        pytest.param("☺\ufe0e", "☺️", id="text-default emoji with VS15"),
    ],
)
def test_check_emoji_accepts_one_emoji(raw: str, expected: str) -> None:
    cleaned = check_emoji(raw)
    assert cleaned == expected
    assert emoji.EMOJI_DATA[cleaned]["status"] == emoji.STATUS["fully_qualified"]


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="whitespace"),
        pytest.param("ab", id="letters"),
        pytest.param("a", id="one letter"),
        pytest.param("1", id="plain digit"),
        pytest.param("#", id="plain hash"),
        pytest.param(":)", id="emoticon"),
        pytest.param(":thumbs_up:", id="shortcode"),
        pytest.param("👍👍", id="two emoji"),
        pytest.param("👍a", id="emoji and letter"),
        pytest.param("🏽", id="skin tone modifier alone"),
        pytest.param("🦰", id="hair component alone"),
        pytest.param("🇫", id="lone regional indicator"),
        pytest.param("1\ufe0f", id="digit with VS16 (not a keycap)"),
        pytest.param("a\ufe0f", id="letter with VS16"),
        pytest.param("\ufe0f", id="variation selector alone"),
    ],
)
def test_check_emoji_refuses(raw: str) -> None:
    with pytest.raises(BadInput) as raised:
        check_emoji(raw)
    assert raised.value.code is ErrorCode.BAD_USER_INPUT


def test_at_most_twenty_distinct_reactions() -> None:
    assert MAX_DISTINCT_REACTIONS == 20


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("no mentions here", [], id="none"),
        pytest.param("@alice", ["alice"], id="alone"),
        pytest.param("hi @alice and @bob", ["alice", "bob"], id="two, in order"),
        pytest.param("@bob then @alice then @bob", ["bob", "alice"], id="de-duplicated"),
        pytest.param("@Alice and @alice", ["Alice", "alice"], id="case kept as written"),
        pytest.param(
            "@ada_l @ada-l @ada.l @ada99", ["ada_l", "ada-l", "ada.l", "ada99"], id="chars"
        ),
        pytest.param("thanks @alice.", ["alice"], id="full stop after a name"),
        pytest.param("@alice, @bob! @carol? (@dan)", ["alice", "bob", "carol", "dan"], id="punct"),
        pytest.param("mail a@b.com", [], id="inside an e-mail address"),
        pytest.param("mail alice@example.com", [], id="e-mail address"),
        pytest.param("@alice@example.com", [], id="e-mail address after @"),
        pytest.param("see https://social.example/@alice", [], id="inside a URL"),
        pytest.param("@ alone", [], id="bare @"),
        pytest.param("@@alice", [], id="double @"),
        pytest.param("line\n@alice\t@bob", ["alice", "bob"], id="after newline and tab"),
        pytest.param("@Zo\u00eb", ["Zo\u00eb"], id="non-ASCII letters"),
        pytest.param("谢谢@bob", ["bob"], id="after Han"),
        pytest.param("コーヒー@bob、ありがとう@carol", ["bob", "carol"], id="after kana"),
        pytest.param("ขอบคุณ@bob", ["bob"], id="after Thai"),
        pytest.param("\U00020b9f@bob", ["bob"], id="after Han beyond the BMP"),
        pytest.param("caf\u00e9@bob me@bob.com a_@bob 1@bob", [], id="after Latin, _ or a digit"),
        pytest.param("мой@bob 안녕@bob", [], id="after Cyrillic or Hangul (spaced scripts)"),
        pytest.param("@bob和@carol", ["bob和", "carol"], id="@ after Han starts a mention"),
    ],
)
def test_mentioned_usernames(body: str, expected: list[str]) -> None:
    assert mentioned_usernames(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param("@bob谢谢", [["bob谢谢", "bob谢", "bob"]], id="Han after a name"),
        pytest.param("@bobさん", [["bobさん", "bobさ", "bob"]], id="kana after a name"),
        pytest.param("谢谢@bob谢谢", [["bob谢谢", "bob谢", "bob"]], id="Han on both sides"),
        # U+0E31, a vowel sign, is no word character: the name read stops before it.
        pytest.param("@bobครับ", [["bobคร", "bobค", "bob"]], id="Thai after a name"),
        pytest.param("@张三さん", [["张三さん", "张三さ", "张三", "张"]], id="a Han name"),
        pytest.param("@bob.谢谢", [["bob.谢谢", "bob.谢", "bob"]], id="full stop, then Han"),
        pytest.param("@bobby @Zo\u00eb", [["bobby"], ["Zo\u00eb"]], id="no spaceless letter"),
        pytest.param(
            "@" + "谢" * 300,
            [["谢" * 300, *("谢" * n for n in range(255, 0, -1))]],
            id="no reading longer than a username",
        ),
    ],
)
def test_a_mention_running_into_a_spaceless_script_may_end_before_any_letter_of_it(
    body: str, expected: list[list[str]]
) -> None:
    assert [name_readings(name) for name in mentioned_usernames(body)] == expected


def test_invisible_controls_are_exactly_the_categories_the_rule_names() -> None:
    """Over every code point: Cc (but tab and newline), Cs, bidi controls and BOM go."""
    import unicodedata

    from threadline.services.text_rules import _remove_invisible_controls

    every = "".join(chr(i) for i in range(0x110000))
    kept = "".join(
        c
        for c in every
        if c in "\n\t"
        or (
            unicodedata.category(c) not in ("Cc", "Cs")
            and c not in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"
        )
    )
    assert _remove_invisible_controls(every) == kept


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("c-1", "c-1", id="plain"),
        pytest.param("  c-1\n", "c-1", id="trimmed"),
        pytest.param(
            "é-\u202e-ü", "é-\u202e-ü", id="kept as given otherwise (no NFC, no bidi removal)"
        ),
        pytest.param("x" * 255, "x" * 255, id="255 characters"),
    ],
)
def test_check_client_id_accepts(raw: str, expected: str) -> None:
    assert check_client_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("", id="empty"),
        pytest.param("  \t", id="blank"),
        pytest.param("x" * 256, id="256 characters"),
        pytest.param("a\x00b", id="NUL"),
        pytest.param("a\x07b", id="C0 control"),
        pytest.param("a\x85b", id="C1 control"),
        pytest.param("a\tb", id="tab inside"),
        pytest.param("a\ud800b", id="lone high surrogate"),
        pytest.param("\udfff", id="lone low surrogate"),
    ],
)
def test_check_client_id_refuses(raw: str) -> None:
    with pytest.raises(BadInput) as refused:
        check_client_id(raw)
    assert refused.value.code is ErrorCode.BAD_USER_INPUT


def test_unstorable_characters_are_exactly_controls_and_surrogates() -> None:
    import unicodedata

    for i in range(0x110000):
        c = chr(i)
        assert has_unstorable_chars(c) is (unicodedata.category(c) in ("Cc", "Cs")), hex(i)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, "", id="none"),
        pytest.param(" a\x00b\ud800 ", "ab", id="NUL and surrogates dropped"),
        pytest.param("e\u0301", "\u00e9", id="NFC, as stored text"),
    ],
)
def test_clean_search(raw: str | None, expected: str) -> None:
    assert clean_search(raw) == expected
