"""Encryption at rest for GitHub App user tokens.

Tokens are sealed with AES-256-GCM under a fresh 96-bit random nonce. The
associated data names the exact row and column a ciphertext belongs to, so a
ciphertext copied anywhere else (another user, app type, GitHub account, or
from the access column to the refresh column) fails to decrypt instead of
silently handing out someone else's token.

Each stored value records which key sealed it::

    v1:<key_id>:<nonce>:<ciphertext>

with nonce and ciphertext in unpadded base64url. Key ids are derived from the
keys themselves, so rotating means only: make the new key active and move the
old one to the retired list until every value has been rewrapped.

This is the only module that ever holds key material, and it performs no I/O;
configuration hands it the environment values and gets back a ``Keyring``.
Nothing here puts a key, or a plaintext token, into a message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple
from urllib.parse import quote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "ACTIVE_KEY_ENV",
    "ENVELOPE_PREFIX_LENGTH",
    "RETIRED_KEYS_ENV",
    "CryptoError",
    "DecryptionError",
    "KeyConfigError",
    "Keyring",
    "TokenSlot",
    "envelope_prefix",
    "generate_key",
    "key_id_of",
    "key_id_of_prefix",
]

ACTIVE_KEY_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEY"
RETIRED_KEYS_ENV = "USER_GH_APP_TOKEN_ENCRYPTION_KEYS_RETIRED"

KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_FORMAT_VERSION = "v1"
_AAD_PREFIX = b"ghvault:v1:"
_KEY_ID_LABEL = b"ghvault-key-id:"

_APP_TYPES = frozenset({"standard", "lite"})
_KINDS = frozenset({"access", "refresh"})

_KEY_ID_LENGTH = 8
_KEY_ID_RE = re.compile(rf"[0-9a-f]{{{_KEY_ID_LENGTH}}}")
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]+")

_MSG_MISMATCH = "token ciphertext does not match its row/column or was tampered with"
_MSG_MALFORMED = "malformed ciphertext"


class CryptoError(Exception):
    """Base for every failure this module reports."""


class KeyConfigError(CryptoError):
    """The configured keys are unusable.

    Messages name the environment variable and the problem, never the value:
    these errors end up in logs and on operators' terminals.
    """


class DecryptionError(CryptoError):
    """A stored value could not be turned back into its token.

    Messages never include the stored value, the plaintext, or key material.
    """


@dataclass(frozen=True)
class TokenSlot:
    """The row and column a ciphertext lives in; it becomes the associated data.

    Components are percent-encoded (RFC 3986, everything but unreserved
    characters) and joined with ``:`` after the ``ghvault:v1:`` prefix. Since
    ``:`` and ``%`` are always escaped inside a component, user ids that contain
    colons cannot shift a boundary: user ``a:b`` with GitHub user ``c`` and user
    ``a`` with GitHub user ``b:c`` give different associated data. Ordinary ids
    pass through unchanged, which keeps the associated data readable.
    """

    user_id: str
    app_type: str
    github_user_id: str
    kind: str

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, str):
                raise TypeError(f"TokenSlot.{field.name} must be str")
            # str() of a str-mixin enum member is "Cls.MEMBER", not its value;
            # keep plain strings so the slot compares and prints as stored.
            object.__setattr__(self, field.name, str.__str__(value))
        if not self.user_id:
            raise ValueError("TokenSlot.user_id must not be empty")
        if not self.github_user_id:
            raise ValueError("TokenSlot.github_user_id must not be empty")
        if self.app_type not in _APP_TYPES:
            raise ValueError(
                f"TokenSlot.app_type must be 'standard' or 'lite' (got {self.app_type!r})"
            )
        if self.kind not in _KINDS:
            raise ValueError(f"TokenSlot.kind must be 'access' or 'refresh' (got {self.kind!r})")
        try:
            self.aad()
        except UnicodeEncodeError:
            raise ValueError("TokenSlot components must be encodable as UTF-8") from None

    def aad(self) -> bytes:
        """Associated data binding a ciphertext to this slot."""
        parts = (self.user_id, self.app_type, self.github_user_id, self.kind)
        return _AAD_PREFIX + ":".join(quote(part, safe="") for part in parts).encode("ascii")


class _Sealed(NamedTuple):
    key_id: str
    nonce: bytes
    ciphertext: bytes


def _key_id(key: bytes) -> str:
    """Short public name for a key; the label keeps it from being a bare key hash."""
    return hashlib.sha256(_KEY_ID_LABEL + key).hexdigest()[:8]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes | None:
    """Strict decoding: only the canonical encoding of some bytes is accepted.

    Lenient decoding would let a changed character in the unused low bits of
    the last symbol decode to the same bytes, so a tampered value could pass.
    """
    if not _B64URL_RE.fullmatch(text):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64url(data) == text else None


def _parse(value: str) -> _Sealed:
    if not isinstance(value, str):
        raise DecryptionError(f"{_MSG_MALFORMED}: expected a string")
    parts = value.split(":")
    if len(parts) != 4:
        raise DecryptionError(
            f"{_MSG_MALFORMED}: expected 'v1:<key id>:<nonce>:<ciphertext>'",
        )
    version, key_id, nonce_text, ciphertext_text = parts
    if version != _FORMAT_VERSION:
        raise DecryptionError(f"{_MSG_MALFORMED}: unsupported format version")
    if not _KEY_ID_RE.fullmatch(key_id):
        raise DecryptionError(f"{_MSG_MALFORMED}: key id is not 8 hex characters")
    nonce = _unb64url(nonce_text)
    if nonce is None or len(nonce) != NONCE_BYTES:
        raise DecryptionError(f"{_MSG_MALFORMED}: bad nonce")
    ciphertext = _unb64url(ciphertext_text)
    if ciphertext is None or len(ciphertext) < _TAG_BYTES:
        raise DecryptionError(f"{_MSG_MALFORMED}: bad ciphertext body")
    return _Sealed(key_id, nonce, ciphertext)


def key_id_of(value: str) -> str:
    """Key id recorded in a stored value; DecryptionError if the value is malformed."""
    return _parse(value).key_id


def envelope_prefix(key_id: str) -> str:
    """How every value sealed under `key_id` begins, for finding such values in the database."""
    return f"{_FORMAT_VERSION}:{key_id}:"


# How many leading characters of a value name its key (see key_id_of_prefix).
ENVELOPE_PREFIX_LENGTH = len(envelope_prefix("0" * _KEY_ID_LENGTH))


def key_id_of_prefix(prefix: str) -> str | None:
    """The key id that a value's first ENVELOPE_PREFIX_LENGTH characters name, if any."""
    version, _, rest = prefix.partition(":")
    key_id, separator, tail = rest.partition(":")
    if version == _FORMAT_VERSION and separator and not tail and _KEY_ID_RE.fullmatch(key_id):
        return key_id
    return None


def generate_key() -> str:
    """A new random key in the form USER_GH_APP_TOKEN_ENCRYPTION_KEY expects."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def _check_keys(
    active: bytes,
    retired: Sequence[bytes],
    active_name: str,
    retired_names: Sequence[str],
) -> None:
    """Refuse unusable key sets; names let callers phrase errors for their source."""
    if not isinstance(active, bytes):
        raise KeyConfigError(f"{active_name} must be bytes")
    if len(active) != KEY_BYTES:
        raise KeyConfigError(f"{active_name} must be {KEY_BYTES} bytes (got {len(active)})")
    seen = {_key_id(active): active_name}
    accepted: list[bytes] = []
    for key, name in zip(retired, retired_names, strict=True):
        if not isinstance(key, bytes):
            raise KeyConfigError(f"{name} must be bytes")
        if len(key) != KEY_BYTES:
            raise KeyConfigError(f"{name} must be {KEY_BYTES} bytes (got {len(key)})")
        if hmac.compare_digest(key, active):
            raise KeyConfigError(f"{name}: retired key equals the active key ({active_name})")
        if any(hmac.compare_digest(key, other) for other in accepted):
            raise KeyConfigError(f"{name}: duplicate retired key")
        key_id = _key_id(key)
        if key_id in seen:
            # Ids are 32 bits, so two distinct keys can share one; stored
            # values could then not say which key sealed them.
            raise KeyConfigError(
                f"{name} has key id {key_id!r}, the same as {seen[key_id]}; "
                "generate a different key",
            )
        seen[key_id] = name
        accepted.append(key)


def _decode_env_key(text: str, name: str) -> bytes:
    """Accept standard or urlsafe base64, padded or not; never echo the text."""
    compact = text.strip().rstrip("=")
    if not compact:
        raise KeyConfigError(f"{name} is empty")
    standard = compact.replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(
            f"{name} is not valid base64 (generate one with `ghvault keys generate`)",
        ) from None
    if len(key) != KEY_BYTES:
        raise KeyConfigError(f"{name} must decode to {KEY_BYTES} bytes (got {len(key)})")
    return key


class Keyring:
    """Active key encrypts; active + retired keys decrypt."""

    __slots__ = ("_active_id", "_ciphers", "_keys")

    def __init__(self, active: bytes, retired: Sequence[bytes] = ()) -> None:
        retired = tuple(retired)
        names = [f"retired key {position}" for position in range(1, len(retired) + 1)]
        _check_keys(active, retired, "active key", names)
        keys = (active, *retired)
        self._keys: tuple[bytes, ...] = keys
        self._active_id = _key_id(active)
        self._ciphers: dict[str, AESGCM] = {_key_id(key): AESGCM(key) for key in keys}

    @classmethod
    def from_env_values(cls, active_b64: str | None, retired_csv: str | None = None) -> Keyring:
        """Build from the raw environment values, with errors that name the variable.

        Blank retired entries (trailing commas, an empty variable) are skipped;
        entries keep their position in the list so operators can find the bad one.
        """
        if active_b64 is None:
            raise KeyConfigError(f"{ACTIVE_KEY_ENV} is not set")
        active = _decode_env_key(active_b64, ACTIVE_KEY_ENV)
        retired: list[bytes] = []
        names: list[str] = []
        for position, entry in enumerate((retired_csv or "").split(","), start=1):
            if entry.strip():
                name = f"{RETIRED_KEYS_ENV} entry {position}"
                retired.append(_decode_env_key(entry, name))
                names.append(name)
        _check_keys(active, retired, ACTIVE_KEY_ENV, names)
        return cls(active, retired)

    @property
    def active_key_id(self) -> str:
        return self._active_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """All key ids, active first, then retired in configured order."""
        return tuple(self._ciphers)

    def encrypt(self, plaintext: str, slot: TokenSlot) -> str:
        """Seal a token for one slot under the active key."""
        if not isinstance(plaintext, str):
            raise TypeError("plaintext must be str")
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._active_id].encrypt(
            nonce,
            plaintext.encode("utf-8"),
            slot.aad(),
        )
        return f"{envelope_prefix(self._active_id)}{_b64url(nonce)}:{_b64url(sealed)}"

    def decrypt(self, value: str, slot: TokenSlot) -> str:
        """Open a stored value; any mismatch or damage raises DecryptionError."""
        parsed = _parse(value)
        cipher = self._ciphers.get(parsed.key_id)
        if cipher is None:
            raise DecryptionError(
                f"unknown key id {parsed.key_id!r} "
                f"(is a retired key missing from {RETIRED_KEYS_ENV}?)",
            )
        try:
            plaintext = cipher.decrypt(parsed.nonce, parsed.ciphertext, slot.aad())
        except InvalidTag:
            raise DecryptionError(_MSG_MISMATCH) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("decrypted token is not valid UTF-8") from None

    def needs_rewrap(self, value: str) -> bool:
        """True when the value was sealed by a key other than the active one."""
        return key_id_of(value) != self._active_id

    def rewrap(self, value: str, slot: TokenSlot) -> str:
        """Re-seal under the active key, always with a fresh nonce.

        Decrypting first also proves the value belongs to ``slot``; use
        ``needs_rewrap`` to decide whether rewriting the row is worth it.
        """
        return self.encrypt(self.decrypt(value, slot), slot)

    def contains_secret(self, secret: bytes) -> bool:
        """True if any configured key equals ``secret``.

        Configuration uses this to refuse a token key that doubles as another
        secret. Every key is compared, in constant time, whatever the outcome.
        """
        if not isinstance(secret, bytes):
            raise TypeError("secret must be bytes")
        found = False
        for key in self._keys:
            found |= hmac.compare_digest(key, secret)
        return found

    def __repr__(self) -> str:
        retired = list(self.key_ids[1:])
        return f"Keyring(active={self._active_id!r}, retired={retired!r})"
