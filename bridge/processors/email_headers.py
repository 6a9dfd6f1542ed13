"""What may go into an e-mail header, for `email_send`: text without control characters, header
names of RFC 5322, addresses email-validator accepts, and custom headers that cannot replace the
ones the bridge writes.

Python's e-mail package starts a new header line at every `str.splitlines()` boundary — `\\v`,
`\\f`, `\\x1c` to `\\x1e`, `\\x85`, U+2028 and U+2029 as well as CR and LF — so any of them in a
value lets the rest of it through as a header of its own. Refused, in every value, name and
address: all C0 controls (tab included), DEL, all C1 controls, U+2028 and U+2029 — a superset of
those boundaries. A value is at most 900 characters, and every line of its header as it goes on
the wire — non-ASCII text encoded (RFC 2047, RFC 2231), up to 9 octets a character — at most 998
octets, which an SMTP server takes. File names and display names may not hold format characters
(Unicode category Cf: bidi overrides such as U+202E, which shows `\u202etxt.exe` as `exe.txt`,
zero-width characters), default ignorable code points (shown as nothing: Hangul fillers,
variation selectors, the combining grapheme joiner, tags) or the braille blank, nor be blank.
Every check raises ValueError naming the field and the character.
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from collections.abc import Mapping
from email.policy import compat32
from typing import Any

import regex
from email_validator import EmailNotValidError, validate_email

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]").search
# What a name may not hold: format characters, what Unicode says to show as nothing when not
# supported (Default_Ignorable_Code_Point: U+034F, the Hangul fillers U+115F, U+1160, U+3164 and
# U+FFA0, variation selectors, tags, …) and U+2800, a braille pattern shown as a blank.
_INVISIBLE = regex.compile(r"[\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]").search
# RFC 5322 ftext: printable ASCII but the colon (so no space or tab before it either).
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}").fullmatch
# RFC 2045: type "/" subtype, each a token (no tspecials).
_MIME_TYPE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch

# The headers the bridge writes itself (a second one would be a second From, Subject, …, or
# break the MIME structure), and those aiosmtplib would read an envelope from (Sender, Resent-*).
_RESERVED = frozenset(
    {
        "from",
        "sender",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "return-path",
    }
)
_RESERVED_PREFIXES = ("content-", "resent-")
# A header value, subject, address or display name: an SMTP line holds 998 characters (RFC 5322
# §2.1.1) and a value without spaces cannot be folded (the server would refuse the message with
# "line too long"); 900 leaves room for the longest name (76) and ": ".
MAX_HEADER_VALUE = 900
# An SMTP line, without its CRLF (RFC 5321 §4.5.3.1.6, RFC 5322 §2.1.1).
MAX_LINE_OCTETS = 998
# Custom headers per message, the request's and the item's together: plenty for tracking and
# list headers, and a bound on what one item can make the bridge and the server carry.
MAX_CUSTOM_HEADERS = 50
MAX_CUSTOM_HEADER_BYTES = 16 * 1024  # names and values, UTF-8
# Reply-To names where answers go (RFC 5322 §3.6.2: a list, but a handful at most in practice);
# not recipients, so not under BRIDGE_SMTP_MAX_RECIPIENTS, but capped all the same.
MAX_REPLY_TO = 10


def header_text(value: str, field: str) -> str:
    """`value`, when it has no character that could end a header line."""
    found = _CONTROL(value)
    if found is not None:
        raise ValueError(
            f"`{field}` may not contain the control character U+{ord(found[0]):04X}: "
            "no line break or other control character of any kind goes into an e-mail header"
        )
    if len(value) > MAX_HEADER_VALUE:
        raise ValueError(
            f"`{field}` has {len(value)} characters; a header value may have at most "
            f"{MAX_HEADER_VALUE} characters (an SMTP line holds 998)"
        )
    return value


def on_the_wire(name: str, value: str, field: str) -> str:
    """`value`, when its header `name: value` fits SMTP lines as the bridge sends it: folded by
    the email package's compat32 policy, the one aiosmtplib writes a classic message with."""
    longest = max(len(line) for line in compat32.fold_binary(name, value).splitlines())
    if longest > MAX_LINE_OCTETS:
        raise ValueError(
            f"`{field}` makes a header line of {longest} octets once encoded for the wire "
            f"(non-ASCII text takes up to 9 octets a character there); an SMTP line holds "
            f"{MAX_LINE_OCTETS}: shorten it"
        )
    return value


def shown_name(value: str, field: str) -> str:
    """A name a reader sees (a file name, a display name): nothing invisible — which would
    reorder or hide what is shown — and not blank when given."""
    found = _INVISIBLE(value)
    if found is not None:
        c = found[0]
        raise ValueError(
            f"`{field}` may not contain the invisible or format character U+{ord(c):04X} "
            f"({unicodedata.name(c, 'unnamed')}): it would change how the name is shown"
        )
    if value and not value.strip():
        raise ValueError(f"`{field}`: a name may not be blank ({value[:20]!r})")
    return value


def addresses(
    value: Any, field: str, at_most: int | None = None, limit: str = ""
) -> list[tuple[str, str]]:
    """`Name <a@b>`, comma-separated, or a list of them: (display name, address) pairs. The
    address is what email-validator accepts (no quoted local part, so no `>`, space or control
    character can reach an SMTP command line), in ASCII: an internationalized domain in its
    IDNA form (`xn--…`), which every server takes; a non-ASCII local part would need SMTPUTF8,
    which the bridge does not use, and is refused. With `at_most`, more addresses are refused
    (saying `limit`) before any is parsed or validated."""
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"`{field}` must be an address or a list of addresses")
    _counted(len(values), field, at_most, limit)
    for text in values:
        header_text(text, field)
    pairs = email.utils.getaddresses(values)
    _counted(len(pairs), field, at_most, limit)
    found = []
    for display, address in pairs:
        try:
            valid = validate_email(address, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as exc:
            raise ValueError(
                f"`{field}`: {address!r} is not an e-mail address the bridge sends to: {exc} "
                "(the bridge sends ASCII addresses, internationalized domains in their IDNA "
                "form; it does not use SMTPUTF8)"
            ) from None
        found.append((shown_name(display, field), valid.ascii_email or valid.normalized))
    return found


def _counted(count: int, field: str, at_most: int | None, limit: str) -> None:
    if at_most is not None and count > at_most:
        raise ValueError(f"`{field}` holds {count} addresses; {limit}")


def custom_headers(value: Any, field: str = "headers") -> dict[str, tuple[str, str]]:
    """Extra headers: names of RFC 5322 (each once, whatever its case), values of text or
    numbers, none of the headers the bridge writes. Keyed by the lowercased name: (name, value)."""
    if not isinstance(value, Mapping):
        raise ValueError(f"`{field}` must be an object of header names and values")
    bounded(len(value), 0, field)
    found: dict[str, tuple[str, str]] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _HEADER_NAME(header_text(name, f"{field}: a name")):
            raise ValueError(
                f"`{field}`: {name!r} is not a header name (1 to 76 printable ASCII characters, "
                "no space or colon)"
            )
        folded = name.lower()
        if folded in _RESERVED or folded.startswith(_RESERVED_PREFIXES):
            raise ValueError(
                f"`{field}`: {name!r} may not be set as a custom header; the bridge writes it "
                "from the message's own fields"
            )
        if folded in found:
            raise ValueError(f"`{field}`: {name!r} is given twice (header names ignore case)")
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(f"`{field}`: the value of {name!r} must be text or a number")
        found[folded] = (name, header_text(str(raw), f"{field}: {name}"))
    bounded(len(found), sum(len(f"{n}{v}".encode()) for n, v in found.values()), field)
    return found


def bounded(count: int, size: int, field: str = "headers") -> None:
    """At most MAX_CUSTOM_HEADERS custom headers of MAX_CUSTOM_HEADER_BYTES in all."""
    if count > MAX_CUSTOM_HEADERS:
        raise ValueError(
            f"`{field}`: {count} custom headers is more than {MAX_CUSTOM_HEADERS} per message"
        )
    if size > MAX_CUSTOM_HEADER_BYTES:
        raise ValueError(
            f"`{field}`: the custom headers' names and values take {size} bytes, more than "
            f"{MAX_CUSTOM_HEADER_BYTES} bytes per message"
        )


def file_name(value: str, field: str) -> str:
    """An attachment's file name: a name, not a path — no `/`, `\\` or `:` (a receiving
    program may join it to a folder), not `.` or `..`, not blank, at most 255 characters."""
    shown_name(header_text(value, field), field)
    if any(c in value for c in "/\\:") or value.strip() in ("", ".", "..") or len(value) > 255:
        raise ValueError(
            f"`{field}`: {value[:80]!r} is not a file name (no `/`, `\\` or `:`, not `.` or "
            "`..`, not blank, at most 255 characters)"
        )
    return value


def mime_type(value: str, field: str) -> tuple[str, str]:
    """A binary's MIME type as (type, subtype); parameters after `;` are dropped."""
    bare = header_text(value, field).partition(";")[0].strip()
    if not _MIME_TYPE(bare):
        raise ValueError(f"`{field}`: {value[:80]!r} is not a MIME type (type/subtype)")
    maintype, _, subtype = bare.partition("/")
    return maintype, subtype
