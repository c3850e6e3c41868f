"""Scrub credentials from text before it leaves the process.

Everything that can reach a log file, an HTTP response or the audit table goes
through :func:`redact`: GraphQL error messages and extensions, log lines, the
access log, audit details and exception text. The vault exists to hold GitHub
tokens, so a single leaked token in a log is a breach; the patterns therefore
lean towards over-redaction wherever a false negative would expose a secret.

Properties the rest of the code relies on:

* text without anything secret-looking comes back unchanged, byte for byte;
* ``redact(redact(x)) == redact(x)``, so layered filters are harmless;
* every pattern runs in linear time, because log lines can carry
  attacker-controlled text (GraphQL queries, URLs, headers).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import overload

__all__ = [
    "REDACTED",
    "REDACTED_JWT",
    "RedactingFilter",
    "install_log_redaction",
    "redact",
    "redact_exception",
    "redact_obj",
]

REDACTED = "[REDACTED]"
REDACTED_JWT = "[REDACTED_JWT]"

# Stops a value pattern from re-matching its own replacement, which keeps
# redact() idempotent and leaves "[REDACTED_JWT]" readable.
_NOT_REDACTED = r"(?!\[REDACTED)"

# base64url alphabet used by JWT segments.
_B64 = "A-Za-z0-9_-"

# A JWT is found by scanning from the start of each base64url run (the
# lookbehind) to the first "eyJ" in it. The atomic group commits to that first
# "eyJ" and the possessive quantifiers never give characters back, so a long
# run such as "eyJeyJeyJ..." is scanned once instead of once per "eyJ". Text
# glued in front of the token is captured as `lead` and kept. Extra dotted
# segments cover JWE (five parts) and anything glued on after the signature.
_JWT = re.compile(
    rf"(?<![{_B64}])(?>(?P<lead>[{_B64}]*?)(?=eyJ))"
    rf"eyJ[{_B64}]++=*"
    rf"\.[{_B64}]*+=*"
    rf"\.[{_B64}]*+=*"
    rf"(?:\.[{_B64}]++=*)*+"
)

# Header values: "Authorization: Bearer x", "authorization=token x",
# "'Authorization': 'Basic x'", and the backslash-escaped form found in
# JSON-inside-JSON. The scheme word is kept; the atomic group prevents falling
# back to treating the scheme itself as the value when the value is already
# redacted, which would break idempotence. Schemes such as Digest carry
# comma-separated name="value" pairs; those are all part of the value.
_AUTH_PARAM_VALUE = r"(?:\"[^\"\r\n]*\"|[^\s\"'\\&;,]*)"
_AUTH_HEADER = re.compile(
    r"(?P<name>\bauthorization(?:\\?[\"'])?[ \t]*[:=][ \t]*(?:\\?[\"'])?)"
    r"(?>(?P<scheme>[A-Za-z][A-Za-z0-9_.-]*[ \t]+)?)"
    rf"{_NOT_REDACTED}(?=[^\s\"'\\&;,])[^\s\"'\\&;,=]*(?:=+{_AUTH_PARAM_VALUE})?"
    rf"(?:,[ \t]*[A-Za-z0-9_-]+={_AUTH_PARAM_VALUE})*",
    re.IGNORECASE,
)


# "Bearer <credential>" outside an Authorization header, e.g. a logged header
# value. The trailing character class keeps a sentence-ending period out of the
# value; _looks_like_credential() keeps prose such as "bearer token" intact.
_BEARER = re.compile(
    rf"(?P<scheme>\bbearer[ \t]+){_NOT_REDACTED}"
    r"(?P<value>[A-Za-z0-9._~+/-]*[A-Za-z0-9_~+/-]=*)",
    re.IGNORECASE,
)

# Password part of URL userinfo, for any scheme (git remotes with
# x-access-token, database DSNs). The scheme may only start a run of scheme
# characters and the user part is possessive, so each "://" is examined once.
# The password may contain "@"; backtracking to the last "@" before the host
# keeps all of it inside the redacted span.
_URL_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<prefix>[A-Za-z][A-Za-z0-9+.-]*+://[^\s/?#@:]*+:)[^\s/?#]+@"
)

# The same credential without a scheme, as git and some error messages print it.
# Stopping at ":" bounds the scan when the prefix repeats and no "@" follows.
_X_ACCESS_TOKEN = re.compile(r"(?P<prefix>\bx-access-token:)[^\s/?#@:]++@", re.IGNORECASE)

# A character GitHub puts in tokens, as itself or escaped: percent-encoded in
# URLs ("%5F"), JSON- or Python-escaped ("\\u005f", "\\x5f", with the backslash
# itself escaped any number of times). Escapes of anything else end a token.
_TOKEN_CHAR_HEX = "(?:3[0-9]|4[1-9a-f]|5[0-9a]|5f|6[1-9a-f]|7[0-9a])"
_TOKEN_CHAR = rf"(?:[a-z0-9_]|%{_TOKEN_CHAR_HEX}|\\++(?:u00|x){_TOKEN_CHAR_HEX})"

# Secret-bearing parameters in query strings, form bodies, JSON, dict reprs and
# environment dumps. Names specific enough to be unambiguous match with either
# separator; "code", "token" and "password" are ordinary words (GraphQL
# extensions carry {"code": "UNAUTHENTICATED"}), so they only count right after
# a query-string delimiter. A closing bracket ends a value, except inside an
# earlier pass's marker: cutting "[REDACTED]" in half would leave a stray "]".
_SPECIFIC_PARAM_NAMES = (
    r"access[_-]token|refresh[_-]token|id[_-]token|client[_-]secret"
    r"|code[_-]verifier|device[_-]code"
)
_SECRET_PARAM = re.compile(
    r"(?P<key>"
    rf"(?:(?<![A-Za-z0-9])(?:{_SPECIFIC_PARAM_NAMES})(?:\\?[\"'])?[ \t]*[:=]"
    r"|(?<=[?&;])(?:code|token|password)=)"
    r"[ \t]*(?:\\?[\"'])?)"
    rf"{_NOT_REDACTED}(?:[^\s\"'\\&#,;)}}\[\]]|\[(?:REDACTED(?:_JWT)?\])?"
    # An escaped token character does not end a value (a JSON-escaped "_").
    rf"|\\++(?:u00|x){_TOKEN_CHAR_HEX})+",
    re.IGNORECASE,
)

# GitHub tokens: the whole run of token characters is taken, whatever its
# length, so neither a 76-character refresh token nor a token glued to other
# identifier characters leaves a tail behind. No left boundary is required:
# "xghu_..." is redacted too, which costs nothing and cannot leak. ghvault's
# own GitHub capabilities ("ghvcap_" + base62, server/github_proxy) are
# bearer credentials of the same kind and go the same way.
#
# Tokens reach logs in other spellings too: percent-encoded in URLs
# ("ghu%5F..."), JSON- or Python-escaped ("ghu\\u005f..."), and upper-cased
# by whoever wrote them. Each character may therefore be itself (in any case)
# or an escape of a token character; escapes of anything else (a space, a
# quote) end the token, so the text around it survives. An ellipsis joined to
# the run is taken with it: libraries that shorten long values ("ghu_AB...YZ")
# would otherwise leave the tail.


def _any_spelling(chars: str) -> str:
    """One character out of `chars`, in either case, as itself or escaped."""
    codes = sorted({f"{ord(c):02x}" for ch in chars for c in (ch.lower(), ch.upper())})
    hex_codes = "|".join(codes)
    return rf"(?:[{re.escape(chars)}]|%(?:{hex_codes})|\\++(?:u00|x)(?:{hex_codes}))"


def _spelled(literal: str) -> str:
    return "".join(_any_spelling(ch) for ch in literal)


# The JWT pass runs first and may already have taken the tail of a shortened
# token whose head happens to end in "eyJ" ("ghu_ABeyJx...tail" leaves
# "ghu_AB[REDACTED_JWT]"): a marker glued to the token is part of it too.
_GITHUB_TOKEN = re.compile(
    rf"(?P<prefix>{_spelled('github_pat_')}|{_spelled('ghvcap_')}"
    rf"|{_spelled('gh')}{_any_spelling('pousr')}{_spelled('_')})"
    rf"(?:{_TOKEN_CHAR}++(?:(?:\.\.\.|\u2026){_TOKEN_CHAR}*+)?+(?:{re.escape(REDACTED_JWT)})?"
    rf"|{re.escape(REDACTED_JWT)})",
    re.IGNORECASE,
)
# Lower-cased beginnings of every spelling, for the quick check in redact().
_GITHUB_TOKEN_NEEDLES = ("gh", "github", "g%", "g\\", "%47", "%67", "\\u004", "\\u006", "\\x")


def _looks_like_credential(value: str) -> bool:
    """Tell a credential after "Bearer" apart from an English word.

    Words, hyphenated or not, are letters only and short; random credentials
    contain digits or symbols or are long.
    """
    if len(value) >= 20:
        return True
    return any(ch.isdigit() or ch in "._~+/=" for ch in value)


def _replace_bearer(match: re.Match[str]) -> str:
    if _looks_like_credential(match["value"]):
        return match["scheme"] + REDACTED
    return match[0]


_Replacement = str | Callable[[re.Match[str]], str]

# Order matters. JWTs go first because a GitHub-token replacement inside a JWT
# segment would break the segment apart and hide the rest of the JWT from its
# pattern. GitHub tokens go next, whole, in whatever spelling: a key/value pass
# that stopped inside an escaped token ("Bearer ghu\\u005f...") would otherwise
# take the prefix and leave the body without one. Key/value passes then redact
# the values around them ("access_token=ghu_[REDACTED]" becomes
# "access_token=[REDACTED]"). The needles are lower-case substrings, one of which every match must
# contain; testing them against the lower-cased input skips most passes on the
# common, secret-free log line. Replacements never create a match for a later
# pass, so the needles are checked against the original text only.
_PASSES: tuple[tuple[tuple[str, ...], re.Pattern[str], _Replacement], ...] = (
    (("eyj",), _JWT, rf"\g<lead>{REDACTED_JWT}"),
    (_GITHUB_TOKEN_NEEDLES, _GITHUB_TOKEN, rf"\g<prefix>{REDACTED}"),
    (("authorization",), _AUTH_HEADER, rf"\g<name>\g<scheme>{REDACTED}"),
    (("bearer",), _BEARER, _replace_bearer),
    (("@",), _URL_USERINFO, rf"\g<prefix>{REDACTED}@"),
    (("x-access-token:",), _X_ACCESS_TOKEN, rf"\g<prefix>{REDACTED}@"),
    (("token", "secret", "code", "password"), _SECRET_PARAM, rf"\g<key>{REDACTED}"),
)


# Any needle of any pass: most text (log fields, messages) has none, and one
# search tells so faster than asking each pass in turn.
_ANY_NEEDLE = re.compile("|".join(re.escape(n) for needles, _, _ in _PASSES for n in needles))


def redact(text: str) -> str:
    """Return `text` with every credential it recognises replaced.

    GitHub tokens keep their prefix (``ghu_[REDACTED]``) so logs still say
    which kind of token was involved; JWTs become ``[REDACTED_JWT]``; header,
    URL and parameter values become ``[REDACTED]`` with their name kept.
    """
    lowered = text.lower()
    if _ANY_NEEDLE.search(lowered) is None:
        return text
    for needles, pattern, replacement in _PASSES:
        if any(needle in lowered for needle in needles):
            text = pattern.sub(replacement, text)
    return text


# Dict keys whose string values are secrets in their own right, such as a
# 40-hex client secret that no pattern can recognise once it is separated
# from its name. Keys are compared lower-cased with "-" read as "_".
_SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "code_verifier",
        "device_code",
        "password",
        "authorization",
        "proxy_authorization",
    }
)
_HEADER_KEYS = frozenset({"authorization", "proxy_authorization"})


def _redact_keyed_value(key: object, value: object) -> object:
    if isinstance(key, str) and isinstance(value, str) and value:
        name = key.lower().replace("-", "_")
        if name in _HEADER_KEYS:
            scheme, space, _ = value.partition(" ")
            return f"{scheme} {REDACTED}" if space else REDACTED
        if name in _SECRET_KEYS:
            return REDACTED
    return redact_obj(value)


@overload
def redact_obj(value: str) -> str: ...
@overload
def redact_obj(value: dict[str, object]) -> dict[str, object]: ...
@overload
def redact_obj(value: object) -> object: ...
def redact_obj(value: object) -> object:
    """Redact every string inside a JSON-like structure, keys included.

    Containers are rebuilt rather than mutated (callers may still hold the
    original); dicts, lists, tuples and sets are walked, other scalars are
    returned as they are. A string value stored under a well-known secret key
    (``client_secret``, ``access_token``, ``authorization`` ...) is replaced
    outright. Two keys that become equal after redaction collapse into one.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_obj(k): _redact_keyed_value(k, v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_obj(item) for item in value]
    if isinstance(value, tuple):
        items = [redact_obj(item) for item in value]
        make = getattr(value, "_make", None)  # namedtuple: keep the type for callers
        return make(items) if make is not None else tuple(items)
    if isinstance(value, set | frozenset):
        return type(value)(redact_obj(item) for item in value)
    return value


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 -- a broken __str__ must not hide the original error
        return f"<unprintable {type(exc).__name__}>"


def redact_exception(exc: BaseException) -> str:
    """Describe `exc` and its cause/context chain on one redacted line.

    The head is ``str(exc)``; each linked exception follows as
    ``"; caused by Type: message"`` (explicit ``from``) or
    ``"; while handling Type: message"`` (implicit context), honouring
    ``raise ... from None`` the way tracebacks do.
    """
    parts = [_safe_str(exc)]
    seen = {id(exc)}
    current: BaseException = exc
    while True:
        if current.__cause__ is not None:
            link, nxt = "caused by", current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            link, nxt = "while handling", current.__context__
        else:
            break
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        parts.append(f"; {link} {type(nxt).__name__}: {_safe_str(nxt)}")
        current = nxt
    return redact("".join(parts))


# Attributes every LogRecord has, plus those formatters add; anything else on a
# record came from `extra=` and may hold request data.
_STANDARD_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))
) | {"message", "asctime", "taskName"}


def _render_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 -- whatever the arguments' __str__ raises
        # A bad format string must not raise out of logger.info() at the call
        # site, and the record must still be emitted.
        return f"{record.msg!s} {record.args!r}"


class RedactingFilter(logging.Filter):
    """Redact a log record in place before a handler formats it.

    Attach it to handlers, not loggers: logger filters are skipped for records
    propagated from child loggers, handler filters see every record. The
    message is rendered and stored pre-formatted, and the traceback is
    rendered into ``exc_text`` with ``exc_info`` cleared, so no formatter can
    go back to the raw arguments or exception. Running it twice on the same
    record is harmless.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(_render_message(record))
        record.args = None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_RECORD_ATTRS and isinstance(
                value, str | dict | list | tuple | set | frozenset
            ):
                setattr(record, name, redact_obj(value))
        return True


def _existing_handlers(logger: logging.Logger) -> Iterable[logging.Handler]:
    yield from logger.handlers
    for candidate in list(logging.root.manager.loggerDict.values()):
        if isinstance(candidate, logging.Logger):  # skip PlaceHolder entries
            yield from candidate.handlers


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to each handler that exists right now.

    Covers the handlers of `logger` (the root logger by default) and of every
    logger created so far. Handlers that already have one are left alone, so
    calling this again after configuring more logging is safe. Handlers added
    later are not covered: call it again once logging is configured.
    """
    target = logger if logger is not None else logging.getLogger()
    for handler in _existing_handlers(target):
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
