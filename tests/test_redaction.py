"""Credentials never survive redaction, and text without them is left alone.

A token counts as leaked when any 8-character window of its secret part is
still present, which catches partial leaks such as the tail of a 76-character
refresh token that a 36-character pattern would miss.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets
import string
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jwt
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from server.redaction import (
    REDACTED,
    REDACTED_JWT,
    RedactingFilter,
    install_log_redaction,
    redact,
    redact_exception,
    redact_obj,
)

CLASSIC_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")
# ghvault's own bearer credential (server/github_proxy/capabilities.py), redacted like a token.
CAPABILITY_PREFIX = "ghvcap_"
BASE62 = string.ascii_letters + string.digits
WINDOW = 8
MARKERS = (REDACTED, REDACTED_JWT, "github_pat_", CAPABILITY_PREFIX, *CLASSIC_PREFIXES)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


class Secret(NamedTuple):
    """A credential as it appears in text, and the part that must not leak."""

    text: str
    secret: str


def random_body(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def classic(prefix: str, length: int = 36) -> Secret:
    body = random_body(length)
    return Secret(prefix + body, body)


def fine_grained() -> Secret:
    body = random_body(22) + "_" + random_body(59)
    return Secret("github_pat_" + body, body)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_jwt() -> Secret:
    token = jwt.encode(
        {"sub": "user-42", "jti": uuid.uuid4().hex}, secrets.token_bytes(32), algorithm="HS256"
    )
    return Secret(token, token)


def leaked_windows(secret: str, output: str, *context: str) -> set[str]:
    """Windows of `secret` found in `output` that the surrounding text cannot explain.

    Surrounding text is arbitrary in property tests and may, by chance,
    contain a window of the secret itself; those are not leaks.
    """
    innocent = (*context, *MARKERS)
    found = set()
    for i in range(len(secret) - WINDOW + 1):
        window = secret[i : i + WINDOW]
        if window in output and not any(window in text for text in innocent):
            found.add(window)
    return found


def assert_redacted(secret: Secret, output: str, *context: str) -> None:
    assert secret.secret not in output
    assert leaked_windows(secret.secret, output, *context) == set(), output


# --- each family, full length ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "length"),
    [(p, 36) for p in CLASSIC_PREFIXES] + [("ghr_", 76), (CAPABILITY_PREFIX, 43)],
)
def test_each_classic_family_is_redacted_to_its_prefix(prefix: str, length: int) -> None:
    """Real lengths: 36 characters after the prefix, 76 for refresh tokens."""
    token = classic(prefix, length)
    output = redact(f"got {token.text} back")
    assert output == f"got {prefix}[REDACTED] back"
    assert_redacted(token, output)


@pytest.mark.parametrize("prefix", [*CLASSIC_PREFIXES, CAPABILITY_PREFIX, "github_pat_"])
@pytest.mark.parametrize("length", [36, 37, 40, 64, 76, 77, 100, 128, 200, 254, 255, 256, 400])
def test_no_tail_survives_at_any_length(prefix: str, length: int) -> None:
    """The whole run of token characters goes, however long GitHub makes tokens."""
    token = classic(prefix, length)
    assert redact(token.text) == f"{prefix}[REDACTED]"


def test_refresh_token_tail_past_36_characters_is_redacted() -> None:
    """The failure mode of 36-character patterns: characters 37..76 leaking."""
    token = classic("ghr_", 76)
    output = redact(f"refresh_token was {token.text}.")
    assert token.secret[36:] not in output
    assert_redacted(token, output)


def test_fine_grained_pat_is_redacted_including_its_inner_underscore() -> None:
    """github_pat_ + 22 + "_" + 59: the part after the inner underscore goes too."""
    token = fine_grained()
    output = redact(f"PAT {token.text} expired")
    assert output == "PAT github_pat_[REDACTED] expired"
    assert_redacted(token, output)


def test_prefix_inside_a_longer_word_is_redacted_not_leaked() -> None:
    """ "xghu_..." may be an accident of concatenation; the secret part still goes."""
    token = classic("ghu_")
    output = redact(f"value=x{token.text}")
    assert_redacted(token, output)
    assert output.endswith("xghu_[REDACTED]")


def test_jwt_is_replaced_whole() -> None:
    """Header, payload and signature all go; a JWT carries no useful prefix to keep."""
    token = hs256_jwt()
    assert redact(f"session {token.text} ok") == f"session {REDACTED_JWT} ok"


def test_unsigned_jwt_with_empty_signature_is_redacted() -> None:
    """alg=none leaves the signature empty; the payload is still sensitive."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64url(json.dumps({"sub": "someone", "scope": "admin"}).encode())
    token = f"{header}.{payload}."
    assert redact(f"got {token} here") == f"got {REDACTED_JWT} here"


def test_jwt_keeps_a_sentence_ending_period() -> None:
    """Punctuation after a JWT belongs to the sentence, not to the token."""
    token = hs256_jwt()
    assert redact(f"Token: {token.text}.") == f"Token: {REDACTED_JWT}."


# --- contexts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def", "Authorization: Bearer [REDACTED]"),
        ("authorization=token xyz", "authorization=token [REDACTED]"),
        ('"Authorization": "Basic dXNlcjpwYXNz"', '"Authorization": "Basic [REDACTED]"'),
        ("{'authorization': 'token s3cr3t'}", "{'authorization': 'token [REDACTED]'}"),
        ("AUTHORIZATION: opaque-value", "AUTHORIZATION: [REDACTED]"),
        ("Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Authorization: Basic [REDACTED]"),
        (
            '{\\"Authorization\\": \\"Bearer abc\\"}',
            '{\\"Authorization\\": \\"Bearer [REDACTED]\\"}',
        ),
        ("sent Bearer abc.def to upstream", "sent Bearer [REDACTED] to upstream"),
        (
            'Authorization: Digest username="a", nonce="n", response="6629fae4" (retry)',
            "Authorization: Digest [REDACTED] (retry)",
        ),
        ("authorization: =opaque", "authorization: [REDACTED]"),
    ],
)
def test_authorization_values_are_redacted_and_the_scheme_kept(text: str, expected: str) -> None:
    """The scheme stays readable for debugging; the credential after it does not."""
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "https://x-access-token:s3cret@github.com/o/r.git",
            "https://x-access-token:[REDACTED]@github.com/o/r.git",
        ),
        (
            "fatal: x-access-token:s3cret@github.com: denied",
            "fatal: x-access-token:[REDACTED]@github.com: denied",
        ),
        ("https://alice:hunter2@example.com/x", "https://alice:[REDACTED]@example.com/x"),
        ("postgres://app:p@ss@db:5432/vault", "postgres://app:[REDACTED]@db:5432/vault"),
        (
            "GET /callback?code=abc123&state=xyz",
            "GET /callback?code=[REDACTED]&state=xyz",
        ),
        (
            "https://h/cb?state=s&access_token=a1&refresh_token=r1#x",
            "https://h/cb?state=s&access_token=[REDACTED]&refresh_token=[REDACTED]#x",
        ),
        (
            "client_id=Iv1.abc&client_secret=0123deadbeef&code_verifier=v3rifier",
            "client_id=Iv1.abc&client_secret=[REDACTED]&code_verifier=[REDACTED]",
        ),
        ("/api?token=t0k3n", "/api?token=[REDACTED]"),
        ("grant_type=refresh_token&x=1", "grant_type=refresh_token&x=1"),
        ('{"client_secret": "0123deadbeef"}', '{"client_secret": "[REDACTED]"}'),
        ("GHVAULT_CLIENT_SECRET=0123deadbeef", "GHVAULT_CLIENT_SECRET=[REDACTED]"),
    ],
)
def test_url_credentials_and_secret_parameters(text: str, expected: str) -> None:
    """URL passwords and secret-bearing parameters go; ordinary parameters stay."""
    assert redact(text) == expected


def test_installation_token_in_a_git_remote() -> None:
    """The clone URL form an installation token is most often logged in."""
    token = classic("ghs_")
    url = f"https://x-access-token:{token.text}@github.com/o/r.git"
    assert redact(url) == "https://x-access-token:[REDACTED]@github.com/o/r.git"


def test_token_in_json() -> None:
    """Tokens serialised in a JSON body are redacted without breaking the JSON."""
    token = classic("ghu_")
    refresh = classic("ghr_", 76)
    text = json.dumps({"access_token": token.text, "refresh_token": refresh.text, "n": 1})
    output = redact(text)
    assert_redacted(token, output)
    assert_redacted(refresh, output)
    assert json.loads(output)["n"] == 1, "the structure around the secrets survives"


def test_multi_line_text() -> None:
    """Every line is scanned, and line structure is preserved."""
    tokens = [classic("ghu_"), classic("ghr_", 76), fine_grained(), hs256_jwt()]
    text = "\n".join(f"line {i}: {t.text}" for i, t in enumerate(tokens))
    output = redact(text)
    assert output.count("\n") == len(tokens) - 1
    for token in tokens:
        assert_redacted(token, output)


def raise_chain(message: str, cause: str) -> Exception:
    """An exception raised `from` another, as resolvers produce them."""
    try:
        try:
            raise KeyError(cause)
        except KeyError as inner:
            raise ValueError(message) from inner
    except ValueError as outer:
        return outer
    raise AssertionError("unreachable")


def test_exception_chain_is_redacted() -> None:
    """Both the message and the chained cause carry a token."""
    outer, inner = classic("ghu_"), classic("ghr_", 76)
    exc = raise_chain(f"refresh failed for {outer.text}", inner.text)
    summary = redact_exception(exc)
    assert summary == "refresh failed for ghu_[REDACTED]; caused by KeyError: 'ghr_[REDACTED]'"
    formatted = redact("".join(traceback.format_exception(exc)))
    assert "Traceback (most recent call last)" in formatted
    for token in (outer, inner):
        assert_redacted(token, summary)
        assert_redacted(token, formatted)


def test_exception_context_and_suppression() -> None:
    """Implicit context is described; ``from None`` hides it as tracebacks do."""
    token = classic("gho_")
    context_error = RuntimeError("boom")
    context_error.__context__ = OSError(token.text)
    assert redact_exception(context_error) == "boom; while handling OSError: gho_[REDACTED]"

    context_error.__suppress_context__ = True
    assert redact_exception(context_error) == "boom"


def test_exception_with_broken_str_and_cycle() -> None:
    """Describing an exception never raises and never loops forever."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    first, second = ValueError("a"), Unprintable()
    first.__cause__, second.__cause__ = second, first
    assert redact_exception(first) == "a; caused by Unprintable: <unprintable Unprintable>"


# --- text that must stay as it is --------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "github",
        "ghost in the machine, github.com and GitHub",
        "eyJ",
        "eyJ alone, and eyJhbGciOiJIUzI1NiJ9 without dots",
        "550e8400-e29b-41d4-a716-446655440000",
        "2024-05-01T12:34:56.789+00:00",
        "mail alice@example.com or bob.smith+tag@example.org",
        "tokens start with ghu_ or ghr_",
        "grant_type=refresh_token and the token expired",
        "missing bearer token. Bearer tokens are required",
        '{"code": "UNAUTHENTICATED", "requestId": "abc"}',
        "status_code=401 error code=bad_verification_code",
        "https://github.com/login/oauth/authorize?client_id=Iv1.abc&state=xyz",
        "postgres://db:5432/vault https://host:8443/path",
        "ünïcödé ✓ \x00 \r\n\t tabs",
    ],
)
def test_text_without_secrets_is_unchanged(text: str) -> None:
    """Look-alikes of credential shapes are not touched, byte for byte."""
    assert redact(text) == text


@PROPERTY_SETTINGS
@given(st.text(alphabet=st.characters(blacklist_characters="_:=@.")))
def test_plain_text_is_unchanged(text: str) -> None:
    """Without "_", ":", "=", "@" or "." no credential shape can occur."""
    assume("bearer" not in text.lower())
    assert redact(text) == text


# --- properties -------------------------------------------------------------------------------


@st.composite
def github_tokens(draw: st.DrawFn) -> Secret:
    """Any family, any length from the real 36 up to past GitHub's 255 limit."""
    prefix = draw(st.sampled_from((*CLASSIC_PREFIXES, CAPABILITY_PREFIX, "github_pat_")))
    if prefix == "github_pat_" and draw(st.booleans()):
        body = (
            draw(st.text(alphabet=BASE62, min_size=22, max_size=22))
            + "_"
            + draw(st.text(alphabet=BASE62, min_size=59, max_size=59))
        )
    else:
        body = draw(st.text(alphabet=BASE62, min_size=36, max_size=255))
    return Secret(prefix + body, body)


CLAIM_VALUES = st.one_of(st.text(max_size=30), st.integers(), st.booleans(), st.none())


@st.composite
def jwts(draw: st.DrawFn) -> Secret:
    """Signed with PyJWT, unsigned, or hand-built from an arbitrary JSON header."""
    claims = draw(
        st.dictionaries(st.text(max_size=12).map(lambda k: "c_" + k), CLAIM_VALUES, max_size=5)
    )
    kind = draw(st.sampled_from(["hs256", "none", "handmade"]))
    if kind == "hs256":
        token = jwt.encode(claims, draw(st.binary(min_size=32, max_size=64)), algorithm="HS256")
    elif kind == "none":
        token = jwt.encode(claims, "", algorithm="none")
    else:
        header = {
            "alg": draw(st.text(max_size=8)),
            **draw(st.dictionaries(st.text(), CLAIM_VALUES)),
        }
        signature = draw(st.binary(max_size=64))
        token = ".".join(
            b64url(part)
            for part in (json.dumps(header).encode(), json.dumps(claims).encode(), signature)
        )
    return Secret(token, token)


SECRETS = st.one_of(github_tokens(), jwts())


def in_prose(token: str, before: str, after: str) -> str:
    return f"{before}{token}{after}"


def in_json(token: str, before: str, after: str) -> str:
    return json.dumps({"note": before, "access_token": token, "other": [after, token]})


def in_git_url(token: str, before: str, after: str) -> str:
    return f"{before}https://x-access-token:{token}@github.com/o/r.git{after}"


def in_query(token: str, before: str, after: str) -> str:
    return f"{before}https://h/cb?code={token}&state=1&refresh_token={token}{after}"


def in_header(token: str, before: str, after: str) -> str:
    return f"{before}Authorization: Bearer {token}\r\n{after}"


def in_header_dict(token: str, before: str, after: str) -> str:
    return repr({"Authorization": f"token {token}", "X-Note": before + after})


EMBEDDINGS: list[Callable[[str, str, str], str]] = [
    in_prose,
    in_json,
    in_git_url,
    in_query,
    in_header,
    in_header_dict,
]


@PROPERTY_SETTINGS
@given(SECRETS, st.sampled_from(EMBEDDINGS), st.text(), st.text())
def test_no_window_of_a_secret_survives_any_embedding(
    token: Secret, embed: Callable[[str, str, str], str], before: str, after: str
) -> None:
    """Whatever text surrounds a token, in whatever carrier, none of it survives."""
    text = embed(token.text, before, after)
    output = redact(text)
    assert leaked_windows(token.secret, output, before, after, embed("", before, after)) == set()


@settings(max_examples=100, deadline=None)
@given(SECRETS, SECRETS, st.text(), st.text())
def test_no_window_survives_in_an_exception_chain(
    outer: Secret, inner: Secret, before: str, after: str
) -> None:
    """Tokens in a message and in its chained cause, in summary and traceback form."""
    exc = raise_chain(f"{before}{outer.text}{after}", inner.text)
    summary = redact_exception(exc)
    formatted = redact("".join(traceback.format_exception(exc)))
    # KeyError's str() is a repr(), which may escape characters of the
    # surrounding text, so both spellings count as context.
    context = (before, after, repr(before), repr(after))
    for token in (outer, inner):
        for output in (summary, formatted):
            assert leaked_windows(token.secret, output, *context) == set()


FRAGMENTS = st.sampled_from(
    [
        "eyJ",
        "eyJhbGciOiJub25lIn0",
        ".",
        "ghu_",
        "ghr_",
        "github_pat_",
        "Authorization",
        "authorization",
        ": ",
        "=",
        "Bearer ",
        "token ",
        "https://",
        "x-access-token:",
        "@",
        "/",
        "?code=",
        "&",
        "access_token",
        "client_secret",
        '"',
        "'",
        "\\",
        REDACTED,
        REDACTED_JWT,
        "abc123",
        "Zm9v==",
        " ",
        "\n",
    ]
)
TRICKY_TEXT = st.lists(st.one_of(FRAGMENTS, st.text(max_size=5)), max_size=30).map("".join)


@PROPERTY_SETTINGS
@given(st.one_of(st.text(), TRICKY_TEXT))
@example("x-access-token:x-access-token:e@")  # a value swallowing an earlier marker
@example("Authorization: Bearer [REDACTED]")
def test_redaction_is_idempotent(text: str) -> None:
    """Layered filters (two handlers, a pre-redacted message) must not garble text."""
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize(
    "text",
    [
        "eyJ" * 350_000,
        "a://u:" * 170_000 + "@",
        "x-access-token:" * 70_000 + "/@",
        "Authorization: " * 70_000,
        "x" * 1_000_000 + "eyJa.b.c",
    ],
    ids=["eyJ", "url-userinfo", "x-access-token", "authorization", "jwt-lead"],
)
def test_megabyte_inputs_complete(text: str) -> None:
    """Inputs shaped to provoke quadratic scans still finish (pytest-timeout guards this).

    The suffix makes sure no pass is skipped by its quick substring check.
    """
    assert redact(text + " @ authorization bearer token secret code gh eyJ")


# --- redact_obj -------------------------------------------------------------------------------


class Pair(NamedTuple):
    left: object
    right: object


def test_redact_obj_walks_nested_structures() -> None:
    """Strings at any depth, keys included, are redacted; other values are kept."""
    token, refresh = classic("ghu_"), classic("ghr_", 76)
    original: dict[str, Any] = {
        "user": {"tokens": [token.text, {"nested": (refresh.text, 3)}]},
        token.text: "as a key",
        "count": 2,
        "ratio": 0.5,
        "flag": None,
        "pair": Pair(token.text, True),
        "tags": {token.text},
    }
    result = redact_obj(original)
    assert isinstance(result, dict)
    assert result == {
        "user": {"tokens": ["ghu_[REDACTED]", {"nested": ("ghr_[REDACTED]", 3)}]},
        "ghu_[REDACTED]": "as a key",
        "count": 2,
        "ratio": 0.5,
        "flag": None,
        "pair": Pair("ghu_[REDACTED]", True),
        "tags": {"ghu_[REDACTED]"},
    }
    assert isinstance(result["pair"], Pair)
    assert original["user"]["tokens"][0] == token.text, "the input is not mutated"


def test_redact_obj_blanks_values_under_secret_keys() -> None:
    """A bare client secret has no recognisable shape; its key gives it away."""
    result = redact_obj(
        {
            "client_secret": "0123456789abcdef0123456789abcdef01234567",
            "Authorization": "Bearer opaque",
            "code": "UNAUTHENTICATED",
            "password": 1234,
        }
    )
    assert result == {
        "client_secret": REDACTED,
        "Authorization": "Bearer [REDACTED]",
        "code": "UNAUTHENTICATED",
        "password": 1234,
    }


# --- logging ----------------------------------------------------------------------------------


def reachable_handlers() -> set[logging.Handler]:
    loggers = [logging.getLogger(), *logging.root.manager.loggerDict.values()]
    return {h for log in loggers if isinstance(log, logging.Logger) for h in log.handlers}


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger that does not propagate into the suite's own log handlers.

    install_log_redaction() reaches every handler in the process, pytest's
    capture handlers included; their filters are put back afterwards so this
    file does not change how other tests see their logs.
    """
    filters = {handler: list(handler.filters) for handler in reachable_handlers()}
    log = logging.getLogger(f"test_redaction.{uuid.uuid4().hex}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
    for name in [n for n in logging.root.manager.loggerDict if n.startswith(log.name)]:
        del logging.root.manager.loggerDict[name]
    for handler in reachable_handlers() | filters.keys():
        handler.filters[:] = filters.get(
            handler, [f for f in handler.filters if not isinstance(f, RedactingFilter)]
        )


def stream_handler(log: logging.Logger) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        logging.Formatter("%(levelname)s %(message)s query=%(query)s", defaults={"query": "-"})
    )
    log.addHandler(handler)
    return stream


def test_filter_redacts_arguments_tracebacks_and_extra(logger: logging.Logger) -> None:
    """Format arguments, the traceback with its chained cause, and `extra` fields."""
    stream = stream_handler(logger)
    install_log_redaction(logger)
    token, refresh, pat, jwt_token = (
        classic("ghu_"),
        classic("ghr_", 76),
        fine_grained(),
        hs256_jwt(),
    )

    logger.info("token %s", token.text)
    try:
        try:
            raise KeyError(pat.text)
        except KeyError as cause:
            raise RuntimeError(f"refresh failed for {refresh.text}") from cause
    except RuntimeError:
        logger.exception("while refreshing with Authorization: Bearer %s", jwt_token.text)
    logger.warning("query", extra={"query": f"access_token={token.text}&x={refresh.text}"})

    output = stream.getvalue()
    for secret in (token, refresh, pat, jwt_token):
        assert_redacted(secret, output)
    assert "INFO token ghu_[REDACTED]" in output
    assert "Traceback (most recent call last)" in output
    assert "RuntimeError: refresh failed for ghr_[REDACTED]" in output
    assert "KeyError: 'github_pat_[REDACTED]'" in output
    assert "Authorization: Bearer [REDACTED_JWT]" in output
    assert "query=access_token=[REDACTED]&x=ghr_[REDACTED]" in output


def test_stack_info_is_redacted(logger: logging.Logger) -> None:
    """The stack shows source lines, and this source line holds a token literal."""
    stream = stream_handler(logger)
    install_log_redaction(logger)
    logger.info("here", stack_info=True)  # ghu_NotARealTokenOnlySourceText0000000
    output = stream.getvalue()
    assert "Stack (most recent call last)" in output
    assert "ghu_[REDACTED]" in output
    assert "NotARealToken" not in output


def test_filter_is_idempotent_across_handlers(logger: logging.Logger) -> None:
    """Two filtered handlers see the same record; the second still gets the traceback."""
    first, second = stream_handler(logger), stream_handler(logger)
    install_log_redaction(logger)
    token = classic("ghs_")
    try:
        raise ValueError(token.text)
    except ValueError:
        logger.exception("failed %s", token.text)
    assert first.getvalue() == second.getvalue()
    assert "ValueError: ghs_[REDACTED]" in second.getvalue()
    assert_redacted(token, second.getvalue())


def test_filter_never_drops_or_raises(logger: logging.Logger) -> None:
    """A mismatched format string is reported in the line, not raised at the call site."""
    stream = stream_handler(logger)
    install_log_redaction(logger)
    token = classic("ghu_")
    logger.info("%s and %s", token.text)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert RedactingFilter().filter(record) is True
    output = stream.getvalue()
    assert "ghu_[REDACTED]" in output
    assert_redacted(token, output)


def test_install_does_not_stack_filters(logger: logging.Logger) -> None:
    """Repeated installation leaves exactly one filter per handler."""
    stream_handler(logger)
    install_log_redaction(logger)
    install_log_redaction(logger)
    install_log_redaction()
    (handler,) = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1


def test_install_covers_handlers_of_other_existing_loggers(logger: logging.Logger) -> None:
    """Handlers on loggers other than the one passed in (libraries' own) are covered too."""
    stream = stream_handler(logger)
    install_log_redaction(logging.getLogger(f"{logger.name}.unrelated"))
    token = classic("gho_")
    logger.info("%s", token.text)
    assert_redacted(token, stream.getvalue())


# --- other spellings of a token ------------------------------------------------------------------


def percent_underscores(token: str) -> str:
    return token.replace("_", "%5F")


def percent_underscores_lower(token: str) -> str:
    return token.replace("_", "%5f")


def percent_everything(token: str) -> str:
    return "".join(f"%{ord(ch):02X}" for ch in token)


def json_escaped_underscores(token: str) -> str:
    return token.replace("_", "\\u005f")


def json_escaped_twice(token: str) -> str:
    return token.replace("_", "\\\\u005F")


def python_escaped_underscores(token: str) -> str:
    return token.replace("_", "\\x5f")


def upper_prefix(token: str) -> str:
    prefix, _, body = token.partition("_")
    return prefix.upper() + "_" + body


def upper_everything(token: str) -> str:
    return token.upper()


ENCODINGS: list[Callable[[str], str]] = [
    percent_underscores,
    percent_underscores_lower,
    percent_everything,
    json_escaped_underscores,
    json_escaped_twice,
    python_escaped_underscores,
    upper_prefix,
    upper_everything,
]


def encoded(token: Secret, encode: Callable[[str], str]) -> Secret:
    """The token spelled another way; what must not leak is the spelled secret part."""
    text = encode(token.text)
    prefix = next(
        known
        for known in ("github_pat_", CAPABILITY_PREFIX, *CLASSIC_PREFIXES)
        if token.text.startswith(known)
    )
    return Secret(text, text[len(encode(prefix)) :])


@pytest.mark.parametrize("encode", ENCODINGS, ids=lambda encode: encode.__name__)
@pytest.mark.parametrize("prefix", [*CLASSIC_PREFIXES, CAPABILITY_PREFIX, "github_pat_"])
def test_other_spellings_of_a_token_are_redacted_to_their_prefix(
    encode: Callable[[str], str], prefix: str
) -> None:
    """URLs percent-encode, JSON escapes, people upper-case: the secret goes in every spelling."""
    token = encoded(classic(prefix, 76), encode)
    output = redact(f"GET /cb?next={token.text}&x=1 HTTP/1.1")
    assert output == f"GET /cb?next={encode(prefix)}{REDACTED}&x=1 HTTP/1.1"
    # The kept prefix, spelled the same way, may share a window with the secret.
    assert_redacted(token, output, encode(prefix))


def test_an_escape_of_a_non_token_character_ends_the_token() -> None:
    """A percent-encoded space or quote after a token belongs to the text around it."""
    token = classic("ghu_")
    assert redact(f"{token.text}%20and%22more") == "ghu_[REDACTED]%20and%22more"
    assert redact(f'"{token.text}\\u0022 then') == '"ghu_[REDACTED]\\u0022 then'


@pytest.mark.parametrize("length", [116, 200, 255, 400])
def test_a_token_shortened_with_an_ellipsis_loses_its_tail_too(length: int) -> None:
    """Libraries shorten long values as head...tail; the tail is part of the token."""
    token = classic("ghr_", length)
    shortened = token.text[:118] + "..." + token.text[-118:]
    output = redact(f"got invalid value '{shortened}'; expected Int")
    assert output == "got invalid value 'ghr_[REDACTED]'; expected Int"
    assert_redacted(token, output)


@PROPERTY_SETTINGS
@given(
    github_tokens(), st.sampled_from(ENCODINGS), st.sampled_from(EMBEDDINGS), st.text(), st.text()
)
def test_no_window_of_a_secret_survives_any_spelling(
    token: Secret,
    encode: Callable[[str], str],
    embed: Callable[[str, str, str], str],
    before: str,
    after: str,
) -> None:
    spelled = encoded(token, encode)
    output = redact(embed(spelled.text, before, after))
    kept_prefix = spelled.text[: len(spelled.text) - len(spelled.secret)]
    context = (before, after, embed("", before, after), kept_prefix)
    assert leaked_windows(spelled.secret, output, *context) == set()


@PROPERTY_SETTINGS
@given(st.one_of(st.text(), TRICKY_TEXT), st.sampled_from(ENCODINGS))
def test_redaction_of_other_spellings_is_idempotent(
    text: str, encode: Callable[[str], str]
) -> None:
    once = redact(encode(text) + " " + encode(classic("ghs_").text))
    assert redact(once) == once


@pytest.mark.parametrize(
    "text",
    ["100%5F", "%67%68 alone", "GHZ_value", "weight_in_grams", "ghx%5Fvalue", "\\u0067h and \\x67"],
)
def test_escape_look_alikes_are_unchanged(text: str) -> None:
    assert redact(text) == text


def test_a_shortened_token_whose_head_looks_like_a_jwt_start_is_one_redaction() -> None:
    """A head ending in "eyJ" plus the ellipsis reads as a JWT; the token still reads as one."""
    head = "ghr_" + "A" * 100 + "eyJab"
    output = redact(f"got invalid value '{head}...{'B' * 118}'; expected Int")
    assert output == "got invalid value 'ghr_[REDACTED]'; expected Int"
    assert redact(output) == output


@PROPERTY_SETTINGS
@given(github_tokens(), st.sampled_from(ENCODINGS), st.text(), st.text())
def test_a_json_log_line_is_redacted_whole_and_stays_json(
    token: Secret, encode: Callable[[str], str], before: str, after: str
) -> None:
    """The JSON formatter redacts the serialised line: escapes in it must neither hide a
    token nor be cut in two by a replacement."""
    from server.http.logs import json_handler

    spelled = encoded(token, encode)
    stream = io.StringIO()
    logger = logging.getLogger(f"test.json-line.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(json_handler(stream))
    text = before + spelled.text + after
    logger.warning("%s", text, extra={"path": f"/cb?next={text}"})

    line = json.loads(stream.getvalue())
    kept_prefix = spelled.text[: len(spelled.text) - len(spelled.secret)]
    for field in ("message", "path"):
        assert leaked_windows(spelled.secret, line[field], before, after, kept_prefix) == set()


def test_a_capability_in_a_git_remote_or_basic_header_is_redacted() -> None:
    """Workers put capabilities in git remotes and Basic credentials: neither survives."""
    capability = classic(CAPABILITY_PREFIX, 43)
    basic = base64.b64encode(f"x:{capability.text}".encode()).decode()
    text = (
        f"fatal: unable to access 'https://x:{capability.text}@vault.example/github/git/o/r.git/'"
        f" (Authorization: Basic {basic})"
    )
    output = redact(text)
    assert "https://x:[REDACTED]@vault.example/github/git/o/r.git/" in output
    assert basic not in output
    assert_redacted(capability, output)
