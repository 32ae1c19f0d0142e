"""Encryption at rest of stored payloads: AES-256-GCM with rotatable keys (issue 12).

Dead letters, their audit and trace details hold whole business records (customers,
amounts, ID numbers); a copied database file or backup must not give them away. With
``SYNCBUS_DATA_KEYS=kid1:BASE64KEY,kid2:BASE64KEY`` every such value is sealed before it is
written; the FIRST key seals, all of them open, so keys rotate without downtime: put the new
key first, restart, run ``syncbus keys rotate`` (re-seals every row), then drop the old key.
``SYNCBUS_ENCRYPT_BUS=1`` (``syncbus run --encrypt-bus``) seals the embedded bus's records too.

A sealed value is ``SBX1|<kid>|<nonce>|<ciphertext+tag>``: a version, the id of its key (so
each row names the key it needs), a 28-byte nonce -- a 16-byte salt that derives this
process's sub-key from the data key (HKDF-SHA256) and the 12-byte GCM IV -- and the
ciphertext. The header is authenticated with the ciphertext, so a row cannot be made to
claim another key. Per-process sub-keys keep each GCM key far below the 2^32 random-IV
limit however many values a node writes over the years; a process re-salts after 2^31.

Values written before encryption was turned on do not start with ``SBX1|`` and are read as
they are (legacy rows pass through). A sealed value whose key is not configured, or that
does not authenticate, is an error naming the key -- never an empty payload.
JSON columns hold ``{"$sbx1": "<base64 of the sealed bytes>"}``, text columns (a dead letter's
error, which may quote the record) ``$sbx1:<base64 of the sealed bytes>``.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import SyncbusError

MAGIC = b"SBX1|"
JSON_TAG = "$sbx1"
TEXT_TAG = JSON_TAG + ":"
KEY_BYTES = 32
SALT_BYTES = 16
IV_BYTES = 12
NONCE_BYTES = SALT_BYTES + IV_BYTES
MAX_SEALS_PER_SALT = 1 << 31
KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
TRUE_WORDS = ("1", "true", "yes", "on")


class CryptoError(SyncbusError):
    """A stored value cannot be sealed or opened; the message names the key id, never key material."""


class DataKeyError(CryptoError):
    """``SYNCBUS_DATA_KEYS`` cannot be used as given."""


class MissingDataKey(CryptoError):
    """A value is sealed with a key id that is not configured."""

    def __init__(self, kid: str, configured: bool) -> None:
        self.kid = kid
        hint = "add it to SYNCBUS_DATA_KEYS" if configured else "set SYNCBUS_DATA_KEYS (it is not set)"
        super().__init__(f"a stored value is encrypted with data key {kid!r}, which this process does not have: "
                         f"{hint}")


class UndecryptableValue(CryptoError):
    """A sealed value is malformed or does not authenticate (wrong key bytes, or tampered with)."""


@dataclass(frozen=True)
class Keyring:
    """Data keys by id; ``current`` seals."""

    keys: Mapping[str, bytes]
    current: str


def parse_data_keys(text: str) -> Keyring | None:
    """``kid1:BASE64,kid2:BASE64`` → a keyring (None when empty); each key must be 32 bytes (AES-256)."""
    keys: dict[str, bytes] = {}
    for position, raw in enumerate(text.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        kid, sep, b64 = entry.partition(":")
        kid = kid.strip()
        if not sep or not KID.fullmatch(kid):
            raise DataKeyError(f"SYNCBUS_DATA_KEYS entry {position}: expected KID:BASE64KEY with a key id of "
                               "letters, digits, '.', '_' or '-' (at most 32)")
        try:
            key = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DataKeyError(f"SYNCBUS_DATA_KEYS key {kid!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise DataKeyError(f"SYNCBUS_DATA_KEYS key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                               "(make one with: openssl rand -base64 32)")
        if kid in keys:
            raise DataKeyError(f"SYNCBUS_DATA_KEYS names key {kid!r} twice")
        keys[kid] = key
    if not keys:
        return None
    return Keyring(keys, next(iter(keys)))


def _subkey(key: bytes, salt: bytes, kid: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                   info=b"syncbus SBX1 " + kid.encode()).derive(key)
    return AESGCM(derived)


@dataclass
class Codec:
    """Seals and opens values with a keyring; without one, seals nothing and opens only legacy values."""

    keyring: Keyring | None = None
    encrypt_bus: bool = False
    _salt: bytes = field(default=b"", repr=False)
    _sealer: AESGCM | None = field(default=None, repr=False)
    _count: Iterator[int] = field(default_factory=itertools.count, repr=False)
    _openers: OrderedDict[tuple[str, bytes], AESGCM] = field(default_factory=OrderedDict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def enabled(self) -> bool:
        return self.keyring is not None

    @staticmethod
    def is_sealed(value: bytes) -> bool:
        return bytes(value[:len(MAGIC)]) == MAGIC

    @staticmethod
    def kid_of(value: bytes) -> str | None:
        """The key id a sealed value names (None for a legacy value)."""
        if not Codec.is_sealed(value):
            return None
        end = bytes(value).find(b"|", len(MAGIC))
        return bytes(value[len(MAGIC):end]).decode("ascii", "replace") if end > 0 else None

    def _current(self) -> tuple[str, bytes, AESGCM]:
        assert self.keyring is not None
        with self._lock:
            if self._sealer is None or next(self._count) >= MAX_SEALS_PER_SALT:
                self._salt = os.urandom(SALT_BYTES)
                self._sealer = _subkey(self.keyring.keys[self.keyring.current], self._salt, self.keyring.current)
                self._count = itertools.count(1)
            return self.keyring.current, self._salt, self._sealer

    def seal(self, plaintext: bytes) -> bytes:
        """``SBX1|kid|nonce|ciphertext`` with the current key; the plaintext itself when no keys are set."""
        if self.keyring is None:
            return bytes(plaintext)
        kid, salt, aead = self._current()
        header = MAGIC + kid.encode() + b"|"
        iv = os.urandom(IV_BYTES)
        return header + salt + iv + b"|" + aead.encrypt(iv, bytes(plaintext), header)

    def open(self, blob: bytes) -> bytes:
        """The plaintext of a sealed value; a legacy (unsealed) value as it is."""
        data = bytes(blob)
        if not self.is_sealed(data):
            return data
        end = data.find(b"|", len(MAGIC))
        if end < 0 or len(data) < end + 2 + NONCE_BYTES:
            raise UndecryptableValue("a stored value starts like an encrypted one (SBX1) but is cut short")
        kid = data[len(MAGIC):end].decode("ascii", "replace")
        nonce = data[end + 1:end + 1 + NONCE_BYTES]
        if data[end + 1 + NONCE_BYTES:end + 2 + NONCE_BYTES] != b"|":
            raise UndecryptableValue(f"a stored value encrypted with key {kid!r} is malformed")
        key = self.keyring.keys.get(kid) if self.keyring is not None else None
        if key is None:
            raise MissingDataKey(kid, self.keyring is not None)
        salt, iv = nonce[:SALT_BYTES], nonce[SALT_BYTES:]
        try:
            return self._opener(kid, key, salt).decrypt(iv, data[end + 2 + NONCE_BYTES:], data[:end + 1])
        except InvalidTag:
            raise UndecryptableValue(f"a stored value encrypted with key {kid!r} does not decrypt: the key bytes "
                                     "are not the ones it was sealed with, or the value was altered") from None

    def _opener(self, kid: str, key: bytes, salt: bytes) -> AESGCM:
        with self._lock:
            aead = self._openers.get((kid, salt))
            if aead is not None:
                self._openers.move_to_end((kid, salt))
                return aead
        aead = _subkey(key, salt, kid)
        with self._lock:
            self._openers[(kid, salt)] = aead
            while len(self._openers) > 256:
                self._openers.popitem(last=False)
        return aead

    # -- JSON columns and the bus ------------------------------------------------------------

    def seal_json(self, obj: Any) -> Any:
        """A JSON column value: ``{"$sbx1": base64(seal(json))}``, or ``obj`` unchanged without keys."""
        if self.keyring is None:
            return obj
        text = orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS)
        return {JSON_TAG: base64.b64encode(self.seal(text)).decode("ascii")}

    def open_json(self, obj: Any) -> Any:
        if not (isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get(JSON_TAG), str)):
            return obj
        try:
            blob = base64.b64decode(obj[JSON_TAG], validate=True)
        except (binascii.Error, ValueError):
            raise UndecryptableValue("an encrypted JSON value is not valid base64") from None
        return orjson.loads(self.open(blob))

    def seal_text(self, text: str | None) -> str | None:
        """A text column value: ``$sbx1:base64(seal(utf-8))``, or ``text`` unchanged without keys."""
        if self.keyring is None or text is None:
            return text
        return TEXT_TAG + base64.b64encode(self.seal(text.encode("utf-8"))).decode("ascii")

    @staticmethod
    def text_kid(text: str) -> str | None:
        """The key id a sealed text value names (None for clear text)."""
        if not text.startswith(TEXT_TAG):
            return None
        try:
            return Codec.kid_of(base64.b64decode(text[len(TEXT_TAG):], validate=True))
        except (binascii.Error, ValueError):
            return None

    def open_text(self, text: str | None) -> str | None:
        if text is None or not text.startswith(TEXT_TAG):
            return text
        try:
            blob = base64.b64decode(text[len(TEXT_TAG):], validate=True)
        except (binascii.Error, ValueError):
            raise UndecryptableValue("an encrypted text value is not valid base64") from None
        return self.open(blob).decode("utf-8", "replace")

    def seal_bus(self, value: bytes) -> bytes:
        """A bus record's value: sealed only with ``SYNCBUS_ENCRYPT_BUS`` (reading always opens)."""
        return self.seal(value) if self.encrypt_bus and self.keyring is not None else value


def codec_from_env(env: Mapping[str, str]) -> Codec:
    keyring = parse_data_keys(env.get("SYNCBUS_DATA_KEYS", ""))
    encrypt_bus = env.get("SYNCBUS_ENCRYPT_BUS", "").strip().lower() in TRUE_WORDS
    if encrypt_bus and keyring is None:
        raise DataKeyError("SYNCBUS_ENCRYPT_BUS (--encrypt-bus) needs SYNCBUS_DATA_KEYS: no key to encrypt with")
    return Codec(keyring, encrypt_bus)


_active: Codec | None = None
_active_lock = threading.Lock()


def codec() -> Codec:
    """This process's codec, from the environment on first use (``configure`` to read it again)."""
    global _active
    if _active is None:
        with _active_lock:
            if _active is None:
                _active = codec_from_env(os.environ)
    return _active


def configure(env: Mapping[str, str] | None = None) -> Codec:
    """Read the keys again (from ``env``, default the environment) and use them from now on."""
    global _active
    new = codec_from_env(os.environ if env is None else env)
    with _active_lock:
        _active = new
    return new


@contextmanager
def using(active: Codec) -> Iterator[Codec]:
    """Tests: use ``active`` inside the block."""
    global _active
    before = _active
    _active = active
    try:
        yield active
    finally:
        _active = before


def seal(plaintext: bytes) -> bytes:
    return codec().seal(plaintext)


def open(blob: bytes) -> bytes:  # shadows the builtin on purpose: the codec speaks seal / open
    return codec().open(blob)


def seal_json(obj: Any) -> Any:
    return codec().seal_json(obj)


def open_json(obj: Any) -> Any:
    return codec().open_json(obj)


def seal_text(text: str | None) -> str | None:
    return codec().seal_text(text)


def open_text(text: str | None) -> str | None:
    return codec().open_text(text)


def seal_bus(value: bytes) -> bytes:
    return codec().seal_bus(value)
