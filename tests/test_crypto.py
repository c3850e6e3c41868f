"""Tests for encryption at rest: format, slot binding, key rotation, key configuration."""

from __future__ import annotations

import base64
import pickle
import re
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server import crypto
from server.crypto import (
    ENVELOPE_PREFIX_LENGTH,
    CryptoError,
    DecryptionError,
    KeyConfigError,
    Keyring,
    TokenSlot,
    envelope_prefix,
    generate_key,
    key_id_of,
    key_id_of_prefix,
)

ACTIVE_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEY"
RETIRED_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEYS_RETIRED"

VALUE_RE = re.compile(r"v1:[0-9a-f]{8}:[A-Za-z0-9_-]+:[A-Za-z0-9_-]+")
TOKEN = "ghu_16C7e42F292c6912E7710c838347Ae178B4a"
SLOT = TokenSlot(user_id="user-1", app_type="standard", github_user_id="583231", kind="access")

KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))
KEY_C = bytes(range(200, 232))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def b64url(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii")


def replace_char(text: str, index: int) -> str:
    """Return ``text`` with one base64url character swapped for a different one."""
    new = "A" if text[index] != "A" else "B"
    return text[:index] + new + text[index + 1 :]


def secret_forms(key: bytes) -> list[str]:
    """Every spelling of a key that must never show up in output."""
    return [b64(key), b64(key).rstrip("="), b64url(key).rstrip("="), key.hex()]


def assert_reveals_nothing(error: BaseException, *secrets_: str) -> None:
    """Make sure neither an exception nor anything chained to it repeats a secret."""
    seen: BaseException | None = error
    while seen is not None:
        for text in (str(seen), repr(seen)):
            for secret in secrets_:
                assert secret not in text
        seen = seen.__cause__ or seen.__context__


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(KEY_A)


# --- format and round trip -------------------------------------------------


def test_round_trip(keyring: Keyring) -> None:
    """Make sure a sealed token opens again in the same slot."""
    assert keyring.decrypt(keyring.encrypt(TOKEN, SLOT), SLOT) == TOKEN


def test_fresh_nonce_per_encryption(keyring: Keyring) -> None:
    """Make sure sealing the same token twice gives different values, nonce included."""
    first = keyring.encrypt(TOKEN, SLOT)
    second = keyring.encrypt(TOKEN, SLOT)
    assert first != second
    assert first.split(":")[2] != second.split(":")[2]


def test_value_format(keyring: Keyring) -> None:
    """Make sure stored values are v1:<8 hex key id>:<b64url nonce>:<b64url ciphertext>."""
    value = keyring.encrypt(TOKEN, SLOT)
    assert VALUE_RE.fullmatch(value)
    _, key_id, nonce, ciphertext = value.split(":")
    assert key_id == keyring.active_key_id
    assert key_id_of(value) == key_id
    assert len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))) == 12
    assert "=" not in nonce
    assert "=" not in ciphertext


def test_the_prefix_names_the_key_that_sealed_a_value(keyring: Keyring) -> None:
    """Make sure database queries that match or group by a value's prefix find its key."""
    value = keyring.encrypt(TOKEN, SLOT)
    assert value.startswith(envelope_prefix(keyring.active_key_id))
    assert key_id_of_prefix(value[:ENVELOPE_PREFIX_LENGTH]) == keyring.active_key_id


@pytest.mark.parametrize(
    "prefix", ["", "garbage", "v2:0123abcd:", "v1:0123ABCD:", "v1:0123abc:x", "v1:0123abcd"]
)
def test_a_prefix_that_names_no_key_is_none(prefix: str) -> None:
    """Make sure a damaged value's prefix is not taken for a key id."""
    assert key_id_of_prefix(prefix) is None


def test_key_id_is_derived_from_the_key() -> None:
    """Make sure the key id is stable for a key and different for different keys."""
    assert Keyring(KEY_A).active_key_id == Keyring(KEY_A).active_key_id
    assert Keyring(KEY_A).active_key_id != Keyring(KEY_B).active_key_id
    assert re.fullmatch(r"[0-9a-f]{8}", Keyring(KEY_A).active_key_id)


def test_key_ids_lists_active_first() -> None:
    """Make sure key_ids starts with the active key and keeps retired order."""
    ring = Keyring(KEY_A, [KEY_B, KEY_C])
    assert ring.key_ids == (
        ring.active_key_id,
        Keyring(KEY_B).active_key_id,
        Keyring(KEY_C).active_key_id,
    )


def test_empty_plaintext_round_trips(keyring: Keyring) -> None:
    """Make sure an empty token still produces a well-formed value."""
    value = keyring.encrypt("", SLOT)
    assert VALUE_RE.fullmatch(value)
    assert keyring.decrypt(value, SLOT) == ""


# --- slot binding ---------------------------------------------------------


@pytest.mark.parametrize(
    "other",
    [
        pytest.param(
            TokenSlot(
                user_id="user-2", app_type="standard", github_user_id="583231", kind="access"
            ),
            id="other-user",
        ),
        pytest.param(
            TokenSlot(user_id="user-1", app_type="lite", github_user_id="583231", kind="access"),
            id="other-app-type",
        ),
        pytest.param(
            TokenSlot(
                user_id="user-1", app_type="standard", github_user_id="583232", kind="access"
            ),
            id="other-github-user",
        ),
        pytest.param(
            TokenSlot(
                user_id="user-1", app_type="standard", github_user_id="583231", kind="refresh"
            ),
            id="other-column",
        ),
    ],
)
def test_ciphertext_moved_to_another_slot_fails(keyring: Keyring, other: TokenSlot) -> None:
    """Make sure a ciphertext copied into another row or column fails to decrypt."""
    value = keyring.encrypt(TOKEN, SLOT)
    with pytest.raises(DecryptionError, match="does not match its row/column") as caught:
        keyring.decrypt(value, other)
    assert_reveals_nothing(caught.value, TOKEN, *secret_forms(KEY_A))


def test_aad_layout() -> None:
    """Make sure the associated data carries the versioned prefix and every component."""
    assert SLOT.aad() == b"ghvault:v1:user-1:standard:583231:access"


def test_colons_in_ids_cannot_collide(keyring: Keyring) -> None:
    """Make sure ids containing ':' cannot be re-split into another slot's associated data."""
    left = TokenSlot(user_id="a:b", app_type="standard", github_user_id="c", kind="access")
    right = TokenSlot(user_id="a", app_type="standard", github_user_id="b:c", kind="access")
    assert left.aad() != right.aad()
    assert left.aad().startswith(b"ghvault:v1:")
    with pytest.raises(DecryptionError):
        keyring.decrypt(keyring.encrypt(TOKEN, left), right)
    with pytest.raises(DecryptionError):
        keyring.decrypt(keyring.encrypt(TOKEN, right), left)


def test_percent_signs_cannot_fake_an_escape() -> None:
    """Make sure a literal '%3A' in an id differs from an escaped ':'."""
    escaped = TokenSlot(user_id="a:b", app_type="lite", github_user_id="1", kind="access")
    literal = TokenSlot(user_id="a%3Ab", app_type="lite", github_user_id="1", kind="access")
    assert escaped.aad() != literal.aad()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "id_token"}, "kind"),
        ({"app_type": "enterprise"}, "app_type"),
        ({"user_id": ""}, "user_id"),
        ({"github_user_id": ""}, "github_user_id"),
    ],
)
def test_slot_rejects_invalid_components(changes: dict[str, str], message: str) -> None:
    """Make sure a slot that cannot name a real column is refused up front."""
    fields = {"user_id": "u", "app_type": "lite", "github_user_id": "1", "kind": "access"}
    with pytest.raises(ValueError, match=message):
        TokenSlot(**(fields | changes))


# --- tampering and malformed values ----------------------------------------


@pytest.mark.parametrize("position", [0, 5, -1])
def test_tampered_ciphertext_fails(keyring: Keyring, position: int) -> None:
    """Make sure changing one character of the ciphertext is detected."""
    version, key_id, nonce, ciphertext = keyring.encrypt(TOKEN, SLOT).split(":")
    index = position % len(ciphertext)
    tampered = ":".join([version, key_id, nonce, replace_char(ciphertext, index)])
    with pytest.raises(DecryptionError) as caught:
        keyring.decrypt(tampered, SLOT)
    assert_reveals_nothing(caught.value, TOKEN, *secret_forms(KEY_A))


@pytest.mark.parametrize("position", [0, 7, -1])
def test_tampered_nonce_fails(keyring: Keyring, position: int) -> None:
    """Make sure changing one character of the nonce is detected."""
    version, key_id, nonce, ciphertext = keyring.encrypt(TOKEN, SLOT).split(":")
    index = position % len(nonce)
    tampered = ":".join([version, key_id, replace_char(nonce, index), ciphertext])
    with pytest.raises(DecryptionError, match="does not match its row/column"):
        keyring.decrypt(tampered, SLOT)


def test_non_canonical_base64_tail_is_refused(keyring: Keyring) -> None:
    """Make sure unused low bits in the last character cannot hide a change."""
    version, key_id, nonce, ciphertext = keyring.encrypt("x", SLOT).split(":")
    # 17 bytes encode to 23 characters; the last one carries 4 unused bits.
    assert len(ciphertext) % 4 == 3
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(ciphertext[-1])
    sibling = alphabet[last ^ 1]
    tampered = ":".join([version, key_id, nonce, ciphertext[:-1] + sibling])
    with pytest.raises(DecryptionError, match="malformed"):
        keyring.decrypt(tampered, SLOT)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("garbage", id="garbage"),
        pytest.param("v1:abcdef12", id="truncated-after-key-id"),
        pytest.param("v1:abcdef12:AAAAAAAAAAAAAAAA", id="missing-ciphertext"),
        pytest.param("v1:abcdef12:AAAAAAAAAAAAAAAA:", id="empty-ciphertext"),
        pytest.param("v1:abcdef12:AAAAAAAAAAAAAAAA:AAAA", id="ciphertext-shorter-than-tag"),
        pytest.param("v1:abcdef12:AAAA:AAAAAAAAAAAAAAAAAAAAAA", id="short-nonce"),
        pytest.param("v1:ABCDEF12:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA", id="upper-hex-key-id"),
        pytest.param("v1:abcdef1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA", id="short-key-id"),
        pytest.param("v2:abcdef12:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA", id="unknown-version"),
        pytest.param("v1:abcdef12:AAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAA", id="padding"),
        pytest.param("v1:abcdef12:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAA+/AAAA", id="standard-alphabet"),
        pytest.param("v1:abcdef12:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA:x", id="extra-field"),
        pytest.param(TOKEN, id="plaintext-token"),
    ],
)
def test_malformed_values_fail(keyring: Keyring, value: str) -> None:
    """Make sure anything that is not a complete v1 value is reported as malformed."""
    with pytest.raises(DecryptionError, match="malformed ciphertext") as caught:
        keyring.decrypt(value, SLOT)
    with pytest.raises(DecryptionError, match="malformed ciphertext"):
        key_id_of(value)
    with pytest.raises(DecryptionError, match="malformed ciphertext"):
        keyring.needs_rewrap(value)
    assert_reveals_nothing(caught.value, TOKEN, *secret_forms(KEY_A))


def test_non_string_value_is_malformed(keyring: Keyring) -> None:
    """Make sure a wrong type from the database layer is a DecryptionError, not a crash."""
    with pytest.raises(DecryptionError, match="malformed"):
        keyring.decrypt(b"v1:abcdef12:AAAA:AAAA", SLOT)  # type: ignore[arg-type]


def test_decryption_error_is_a_crypto_error() -> None:
    """Make sure callers can catch every failure here through one base class."""
    assert issubclass(DecryptionError, CryptoError)
    assert issubclass(KeyConfigError, CryptoError)


# --- rotation ---------------------------------------------------------------


def test_value_from_retired_key_still_decrypts_and_rewraps() -> None:
    """Make sure rotation keeps old values readable until they are rewrapped."""
    old = Keyring(KEY_A)
    value = old.encrypt(TOKEN, SLOT)
    rotated = Keyring(KEY_B, [KEY_A])

    assert rotated.decrypt(value, SLOT) == TOKEN
    assert rotated.needs_rewrap(value)
    assert not old.needs_rewrap(value)

    rewrapped = rotated.rewrap(value, SLOT)
    assert key_id_of(rewrapped) == rotated.active_key_id
    assert not rotated.needs_rewrap(rewrapped)
    assert rotated.decrypt(rewrapped, SLOT) == TOKEN
    assert Keyring(KEY_B).decrypt(rewrapped, SLOT) == TOKEN


def test_rewrap_checks_the_slot() -> None:
    """Make sure rewrapping cannot launder a ciphertext into a different slot."""
    value = Keyring(KEY_A).encrypt(TOKEN, SLOT)
    other = TokenSlot(
        user_id="user-1", app_type="standard", github_user_id="583231", kind="refresh"
    )
    with pytest.raises(DecryptionError, match="does not match"):
        Keyring(KEY_B, [KEY_A]).rewrap(value, other)


def test_missing_retired_key_names_the_key_id() -> None:
    """Make sure a value from a key nobody configured points at the retired-keys variable."""
    old = Keyring(KEY_A)
    value = old.encrypt(TOKEN, SLOT)
    with pytest.raises(DecryptionError) as caught:
        Keyring(KEY_B).decrypt(value, SLOT)
    message = str(caught.value)
    assert f"unknown key id '{old.active_key_id}'" in message
    assert RETIRED_ENV in message
    assert_reveals_nothing(caught.value, TOKEN, *secret_forms(KEY_A), *secret_forms(KEY_B))


def test_value_relabelled_with_another_key_id_fails() -> None:
    """Make sure a value whose key id was rewritten to name a different key fails cleanly."""
    value = Keyring(KEY_A).encrypt(TOKEN, SLOT)
    forged = value.replace(key_id_of(value), Keyring(KEY_B).active_key_id, 1)
    with pytest.raises(DecryptionError, match="does not match"):
        Keyring(KEY_B).decrypt(forged, SLOT)


# --- key validation -------------------------------------------------------


@pytest.mark.parametrize(
    ("active", "retired", "message"),
    [
        pytest.param(KEY_A[:31], (), "active key must be 32 bytes \\(got 31\\)", id="short"),
        pytest.param(KEY_A + b"\0", (), "active key must be 32 bytes \\(got 33\\)", id="long"),
        pytest.param(KEY_A, [KEY_B, KEY_A[:16]], "retired key 2 must be 32 bytes", id="retired"),
        pytest.param(KEY_A, [KEY_A], "equals the active key", id="retired-is-active"),
        pytest.param(KEY_A, [KEY_B, KEY_B], "duplicate retired key", id="duplicate"),
    ],
)
def test_constructor_refuses_bad_keys(active: bytes, retired: list[bytes], message: str) -> None:
    """Make sure a Keyring can only be built from distinct 32-byte keys."""
    with pytest.raises(KeyConfigError, match=message) as caught:
        Keyring(active, retired)
    for key in (active, *retired):
        assert_reveals_nothing(caught.value, *secret_forms(key))


def test_constructor_refuses_colliding_key_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure keys sharing a key id are refused: values could not say which one sealed them."""
    monkeypatch.setattr(crypto, "_key_id", lambda key: "deadbeef")
    with pytest.raises(KeyConfigError, match="key id 'deadbeef'"):
        Keyring(KEY_A, [KEY_B])
    with pytest.raises(KeyConfigError, match=f"{RETIRED_ENV} entry 1 has key id 'deadbeef'"):
        Keyring.from_env_values(b64(KEY_A), b64(KEY_B))


def test_constructor_refuses_non_bytes() -> None:
    """Make sure a base64 string passed where bytes belong is not silently used."""
    with pytest.raises(KeyConfigError, match="must be bytes"):
        Keyring(b64(KEY_A))  # type: ignore[arg-type]


# --- configuration from the environment -----------------------------------


def test_from_env_values_accepts_standard_and_urlsafe_base64() -> None:
    """Make sure both base64 alphabets, padded or not, give the same key."""
    key = bytes([0xFB, 0xFF, 0xBF] * 10 + [0xFE, 0xFF])  # forces '+' and '/' in standard form
    assert "+" in b64(key) or "/" in b64(key)
    expected = Keyring(key).active_key_id
    for spelling in (b64(key), b64url(key), b64url(key).rstrip("="), f"  {b64(key)}\n"):
        assert Keyring.from_env_values(spelling).active_key_id == expected


def test_from_env_values_reads_retired_list_with_whitespace() -> None:
    """Make sure retired keys tolerate spaces around commas and blank entries."""
    ring = Keyring.from_env_values(b64(KEY_A), f" {b64(KEY_B)} ,\t{b64url(KEY_C)} , ")
    assert ring.key_ids == Keyring(KEY_A, [KEY_B, KEY_C]).key_ids
    assert Keyring.from_env_values(b64(KEY_A), "").key_ids == (ring.active_key_id,)
    assert Keyring.from_env_values(b64(KEY_A), None).key_ids == (ring.active_key_id,)


def test_from_env_values_round_trips_generated_keys() -> None:
    """Make sure a generated key is accepted as configuration and works."""
    key = generate_key()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert generate_key() != key
    ring = Keyring.from_env_values(key, generate_key())
    assert ring.decrypt(ring.encrypt(TOKEN, SLOT), SLOT) == TOKEN


NOT_BASE64 = "this-is-not*base64!" + secrets.token_hex(8)
SHORT = b64(secrets.token_bytes(31))
LONG = b64(secrets.token_bytes(33))
ACTIVE = b64(secrets.token_bytes(32))
OTHER = b64(secrets.token_bytes(32))
HALF = b64(secrets.token_bytes(16))


@pytest.mark.parametrize(
    ("active", "retired", "expected", "given"),
    [
        pytest.param(None, None, f"{ACTIVE_ENV} is not set", (), id="missing"),
        pytest.param("   ", None, f"{ACTIVE_ENV} is empty", (), id="blank"),
        pytest.param(
            NOT_BASE64, None, f"{ACTIVE_ENV} is not valid base64", (NOT_BASE64,), id="b64"
        ),
        pytest.param(
            SHORT, None, f"{ACTIVE_ENV} must decode to 32 bytes (got 31)", (SHORT,), id="31-bytes"
        ),
        pytest.param(
            LONG, None, f"{ACTIVE_ENV} must decode to 32 bytes (got 33)", (LONG,), id="33-bytes"
        ),
        pytest.param(
            ACTIVE,
            f"{OTHER}, {HALF}",
            f"{RETIRED_ENV} entry 2 must decode to 32 bytes (got 16)",
            (ACTIVE, OTHER, HALF),
            id="retired-16-bytes",
        ),
        pytest.param(
            ACTIVE,
            f"{OTHER},{NOT_BASE64}",
            f"{RETIRED_ENV} entry 2 is not valid base64",
            (ACTIVE, OTHER, NOT_BASE64),
            id="retired-not-base64",
        ),
        pytest.param(
            ACTIVE,
            ACTIVE,
            f"{RETIRED_ENV} entry 1: retired key equals the active key",
            (ACTIVE,),
            id="retired-is-active",
        ),
        pytest.param(
            ACTIVE,
            f"{OTHER}, {OTHER.replace('+', '-').replace('/', '_')}",
            f"{RETIRED_ENV} entry 2: duplicate retired key",
            (ACTIVE, OTHER),
            id="retired-duplicate",
        ),
    ],
)
def test_from_env_values_errors_name_the_variable_not_the_value(
    active: str | None,
    retired: str | None,
    expected: str,
    given: tuple[str, ...],
) -> None:
    """Make sure bad key configuration says which variable is wrong without echoing it."""
    with pytest.raises(KeyConfigError) as caught:
        Keyring.from_env_values(active, retired)
    assert str(caught.value).startswith(expected)
    for value in given:
        assert_reveals_nothing(caught.value, value, value.strip().rstrip("="))
    assert caught.value.__cause__ is None


# --- never revealing secrets --------------------------------------------


def test_keyring_repr_and_str_show_only_key_ids() -> None:
    """Make sure printing or logging a keyring never shows key material."""
    ring = Keyring(KEY_A, [KEY_B])
    for text in (repr(ring), str(ring), f"{ring}"):
        assert text == (
            f"Keyring(active='{ring.active_key_id}', retired=['{Keyring(KEY_B).active_key_id}'])"
        )
        for key in (KEY_A, KEY_B):
            for form in secret_forms(key):
                assert form not in text


def test_keyring_cannot_be_pickled() -> None:
    """Make sure a keyring cannot be serialised somewhere with its raw keys."""
    with pytest.raises(TypeError):
        pickle.dumps(Keyring(KEY_A))


def test_encrypt_rejects_bytes_without_echoing(keyring: Keyring) -> None:
    """Make sure a wrongly typed token is refused without putting it in the message."""
    with pytest.raises(TypeError) as caught:
        keyring.encrypt(TOKEN.encode(), SLOT)  # type: ignore[arg-type]
    assert TOKEN not in str(caught.value)


# --- contains_secret ------------------------------------------------------


def test_contains_secret() -> None:
    """Make sure configuration can detect a token key reused as another secret."""
    ring = Keyring(KEY_A, [KEY_B])
    assert ring.contains_secret(KEY_A)
    assert ring.contains_secret(KEY_B)
    assert not ring.contains_secret(KEY_C)
    assert not ring.contains_secret(b"")
    assert not ring.contains_secret(KEY_A[:31])
    assert not ring.contains_secret(b64(KEY_A).encode())


# --- properties ------------------------------------------------------------

PROPERTY_KEYRING = Keyring(KEY_C, [KEY_A])

# Separator-heavy ids give the encoding many chances to become ambiguous.
ids = st.text(min_size=1, max_size=40) | st.text(alphabet=":%3Aab", min_size=1, max_size=8)
slots = st.builds(
    TokenSlot,
    user_id=ids,
    app_type=st.sampled_from(["standard", "lite"]),
    github_user_id=ids,
    kind=st.sampled_from(["access", "refresh"]),
)


@given(plaintext=st.text(max_size=300), slot=slots)
def test_round_trip_property(plaintext: str, slot: TokenSlot) -> None:
    """Make sure any text token round-trips in any slot and its value has the documented shape."""
    value = PROPERTY_KEYRING.encrypt(plaintext, slot)
    assert VALUE_RE.fullmatch(value)
    assert PROPERTY_KEYRING.decrypt(value, slot) == plaintext
    assert slot.aad().startswith(b"ghvault:v1:")


@given(first=slots, second=slots)
def test_distinct_slots_have_distinct_aad(first: TokenSlot, second: TokenSlot) -> None:
    """Make sure the associated data is unambiguous: equal AAD means the same slot."""
    assert (first.aad() == second.aad()) == (first == second)
