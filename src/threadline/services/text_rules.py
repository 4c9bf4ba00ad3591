"""Rules for text that users type: bodies, titles, descriptions, names, emoji, mentions.
Each returns the cleaned value or raises ``BadInput``; services call them before storing
anything, so every path (GraphQL, CLI, seed) cleans text the same way."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

import emoji

from threadline.errors import BadInput

MAX_BODY_CHARS: Final = 4000
MAX_TITLE_CHARS: Final = 200
MAX_DESCRIPTION_CHARS: Final = 2000
MAX_DISPLAY_NAME_CHARS: Final = 100
MAX_DISTINCT_REACTIONS: Final = 20
MAX_CLIENT_ID_CHARS: Final = 255

# Every line break spelling becomes "\n": browsers submit CRLF, and NEL or U+2028/9
# would otherwise split or merge lines differently on each client.
_LINE_BREAKS: Final = re.compile("\r\n|[\r\x85\u2028\u2029]")

# Explicit bidi embeddings, overrides and isolates reorder everything after them, so
# a message can display as other than it is ("Trojan Source", CVE-2021-42574) and an
# unterminated one leaks into the client's UI. The implicit marks LRM, RLM and ALM
# stay: mixed Hebrew/Arabic and Latin text needs them.
_BIDI_CONTROLS: Final = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# All of Cc but tab and newline (PostgreSQL refuses NUL), lone surrogates (JSON
# "\ud800" escapes; no UTF-8 encoder writes them), bidi controls, and U+FEFF, a
# byte-order mark that pasted text drags along: one pass of the regex engine.
_INVISIBLE_CONTROLS: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff" + "".join(sorted(_BIDI_CONTROLS | {"\ufeff"})) + "]"
)

# Trimmed at both ends besides whitespace: invisible characters that mean nothing
# at an edge, so that a body of nothing but them counts as empty. ZWJ and ZWNJ stay
# inside text (emoji sequences, Persian and Indic scripts need them).
_EDGE_INVISIBLES: Final = "\u200b\u200c\u200d\u2060"
_TRIM: Final = re.compile(rf"^[\s{_EDGE_INVISIBLES}]+|[\s{_EDGE_INVISIBLES}]+$")

# Tabs and line breaks, with the spaces around them, become one space in one-line
# fields (titles, names) so a pasted multi-line value still reads as one line.
_LINE_WHITESPACE: Final = re.compile(r"[ \t\n]*[\t\n][ \t\n]*")

# Letters of the scripts written without spaces between words (Han, kana, Thai, Lao,
# Myanmar, Khmer): "谢谢@bob" is a word, then a mention.
_SPACELESS: Final = (
    "\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029"
    "\u3031-\u3035\u3038-\u303c\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003ffff"
)

# "@" plus a Clerk username, neither after a username character (but a letter above),
# "@" or "/" (an e-mail address, a URL path) nor followed by "@" ("@alice@example.com";
# but "@bob和@carol": "@" after those letters starts a mention). The possessive "*+" stops
# the engine from backtracking to a shorter name that dodges that check.
_MENTION: Final = re.compile(
    rf"(?<![^\W{_SPACELESS}])(?<![.@/-])@(\w[\w.-]*+)(?!(?<![{_SPACELESS}])@)"
)
_SPACELESS_LETTER: Final = re.compile(f"[{_SPACELESS}]")
_USERNAME_CHARS: Final = 255  # users.username: no longer reading can name anyone

# What no text column can hold or no encoder can write: C0/C1 controls and lone surrogates.
_UNSTORABLE: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# What no JSON document can hold: PostgreSQL's jsonb refuses \u0000.
_UNENCODABLE: Final = re.compile("[\x00\ud800-\udfff]")


def _remove_invisible_controls(text: str) -> str:
    return _INVISIBLE_CONTROLS.sub("", text)


def has_unencodable_chars(text: str) -> bool:
    """Whether ``text`` holds NUL or a lone surrogate, which no stored JSON may hold."""
    return _UNENCODABLE.search(text) is not None


def has_unstorable_chars(text: str) -> bool:
    """Whether ``text`` holds a control character or a lone surrogate."""
    return _UNSTORABLE.search(text) is not None


def _clean(raw: str) -> str:
    """The cleaning every text field shares: line breaks, controls, NFC, trimming."""
    text = _LINE_BREAKS.sub("\n", raw)
    # Controls go before NFC, so that a base letter and a combining mark that a
    # control separated compose ("e\x00\u0301" becomes "é").
    text = _remove_invisible_controls(text)
    text = unicodedata.normalize("NFC", text)
    return _TRIM.sub("", text)


def _check_length(text: str, what: str, maximum: int) -> str:
    # Length is in code points, the unit the contract's limits are stated in.
    if len(text) > maximum:
        raise BadInput(f"{what} is too long: {len(text)} characters, at most {maximum}.")
    return text


def _clean_one_line(raw: str, what: str, maximum: int) -> str:
    text = _LINE_WHITESPACE.sub(" ", _clean(raw))
    if not text:
        raise BadInput(f"{what} must not be empty.")
    return _check_length(text, what, maximum)


def clean_body(raw: str, *, has_attachments: bool = False) -> str:
    """A message body: cleaned, 1 to 4000 characters; empty only with attachments."""
    text = _clean(raw)
    if not text and not has_attachments:
        raise BadInput("Message body must not be empty unless the message has attachments.")
    return _check_length(text, "Message body", MAX_BODY_CHARS)


def clean_title(raw: str) -> str:
    """A thread title: one line, 1 to 200 characters."""
    return _clean_one_line(raw, "Title", MAX_TITLE_CHARS)


def clean_description(raw: str | None) -> str | None:
    """A thread description: up to 2000 characters, lines kept; empty means none."""
    text = _clean(raw or "")
    return _check_length(text, "Description", MAX_DESCRIPTION_CHARS) if text else None


def clean_display_name(raw: str) -> str:
    """A user's display name: one line, 1 to 100 characters."""
    return _clean_one_line(raw, "Display name", MAX_DISPLAY_NAME_CHARS)


def check_client_id(raw: str) -> str:
    """A sendMessage ``clientId``: an opaque key, trimmed, 1 to 255 characters; refused
    rather than cleaned, since removing a character would make it another key."""
    text = raw.strip()
    if not text or len(text) > MAX_CLIENT_ID_CHARS:
        raise BadInput(f"`clientId` must be 1 to {MAX_CLIENT_ID_CHARS} characters")
    if has_unstorable_chars(text):
        raise BadInput("`clientId` must not contain control characters or lone surrogates")
    return text


def clean_search(raw: str | None) -> str:
    """Search text, cleaned like user text so that it matches what was stored; may be ""."""
    return _clean(raw) if raw else ""


def clean_external_text(raw: str) -> str:
    """Text from another system (Clerk's names, token claims), cleaned like user text;
    no length rule (the caller clips to its column), may be ""."""
    return _clean(raw)


def check_emoji(raw: str) -> str:
    """One emoji for a reaction (as the ``emoji`` package lists them, sequences included;
    components alone refused), fully qualified so that "❤" and "❤️" are one reaction."""
    candidate = _clean(raw)
    # A variation selector the tables do not list ("👍\ufe0f" from some pickers, "❤\ufe0e")
    # still names that one emoji.
    data = emoji.EMOJI_DATA.get(candidate) or emoji.EMOJI_DATA.get(
        candidate.replace("\ufe0e", "").replace("\ufe0f", "")
    )
    if data is None or data["status"] == emoji.STATUS["component"]:
        raise BadInput(f"Not a single emoji: {raw!r}.")
    canonical = emoji.emojize(data["en"], language="en")
    # The name maps back to the fully-qualified spelling; keep the input if the
    # package's tables ever disagree with themselves.
    return canonical if canonical in emoji.EMOJI_DATA else candidate


def mentioned_usernames(body: str) -> list[str]:
    """The usernames ``@mentioned`` in a body, as written, once each, in order."""
    seen: dict[str, None] = {}
    for match in _MENTION.finditer(body):
        # A full stop after a name ends the sentence, not the name.
        name = match.group(1).rstrip(".")
        if name:
            seen.setdefault(name, None)
    return list(seen)


def name_readings(name: str) -> list[str]:
    """The usernames a mentioned name may be, longest first: one that runs into a spaceless
    script ("bob谢谢", "张三さん") may end before any letter of it, and only the thread's
    participants can tell where."""
    cuts = range(min(len(name) - 1, _USERNAME_CHARS), 0, -1)
    return [name, *(name[:i].rstrip(".") for i in cuts if _SPACELESS_LETTER.match(name, i))]
