"""Signed link tokens: the only thing a subscriber's links carry. A token names one purpose
(confirm, preferences, unsubscribe, digest: a digest and the archive of them, feed: the private
Atom feed, feedback on a paper, muting a topic), the subscriber's public id and their token
version, and what the link is about (the topic of a mute link; a feedback link names its
paper and "more" or "less" in the path beside the reader's token), signed with the secret key
(itsdangerous, one salt per purpose so a token for one purpose never opens another). Bumping a
subscriber's token version revokes every token issued before. A token opens its subscriber's
page for as long as its link lives, so it is kept out of logs and caches: `LINK_TOKEN` is what
one looks like wherever it is written down."""

from __future__ import annotations

import enum
import functools
import hmac
import re
import uuid
from dataclasses import dataclass
from typing import Any

from itsdangerous import (
    BadSignature,
    Serializer,
    SignatureExpired,
    Signer,
    TimestampSigner,
    URLSafeTimedSerializer,
)
from itsdangerous.encoding import base64_encode, int_to_bytes, want_bytes


class Purpose(enum.StrEnum):
    CONFIRM = "confirm"
    PREFERENCES = "preferences"
    UNSUBSCRIBE = "unsubscribe"
    DIGEST = "digest"
    FEED = "feed"
    FEEDBACK = "feedback"  # no subject: the paper and "more" or "less" follow it in the path
    MUTE = "mute"  # subject: the topic


# Confirmation links expire; links in digests must keep working for as long as the mail is kept.
MAX_AGE_SECONDS: dict[Purpose, int | None] = {
    Purpose.CONFIRM: 3 * 24 * 3600,
    Purpose.PREFERENCES: None,
    Purpose.UNSUBSCRIBE: None,
    Purpose.DIGEST: None,
    Purpose.FEED: None,
    Purpose.FEEDBACK: None,
    Purpose.MUTE: None,
}


# URL-safe base64 parts joined by dots, the last the signature: every token `make_token` makes
# (a test holds them to it), wherever it appears (a path, a query, a log line).
LINK_TOKEN = re.compile(r"(?:[A-Za-z0-9_-]+\.)+[A-Za-z0-9_-]{20,}")
REDACTED_TOKEN = "[token]"  # noqa: S105 - what stands in for one, not one


def redact_link_tokens(text: str) -> str:
    """`text` with every link token in it replaced by REDACTED_TOKEN."""
    return LINK_TOKEN.sub(REDACTED_TOKEN, text)


def carries_link_token(text: str) -> bool:
    return LINK_TOKEN.search(text) is not None


class TokenError(ValueError):
    """A token that is forged, damaged, meant for another purpose, or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclass(frozen=True, slots=True)
class TokenClaims:
    public_id: uuid.UUID
    token_version: int
    subject: tuple[str | int, ...] = ()  # what the link is about, for purposes that name one


class LinkSigner(TimestampSigner):
    """itsdangerous's timed signer, with its derived key and its keyed HMAC state kept: stock, it
    derives the key (an HMAC) and keys a new HMAC for every signature, most of the time of
    signing a link; a digest signs about 25 (two per paper, one per topic, three more)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes | str | None, bytes] = {}
        self._keyed: dict[bytes, Any] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        derived = self._derived.get(secret_key)
        if derived is None:
            derived = self._derived[secret_key] = super().derive_key(secret_key)
        return derived

    def get_signature(self, value: str | bytes) -> bytes:
        key = self.derive_key()
        keyed = self._keyed.get(key)
        if keyed is None:
            keyed = self._keyed[key] = hmac.new(key, digestmod=self.digest_method)
        mac = keyed.copy()
        mac.update(want_bytes(value))
        return base64_encode(mac.digest())


class LinkSerializer(URLSafeTimedSerializer):
    """itsdangerous's URL-safe timed serializer, cheaper to sign with: a digest signs three
    links, two more per paper and one per topic, and a send run millions. Its tokens are byte for
    byte the stock serializer's (a test checks), and it reads every token the stock one reads.

    - A payload of a public id, a version and a paper id never shrinks under zlib (a topic
      seldom does), so the attempt to compress it, a fifth of the signing time, is skipped.
    - The signer for the serializer's own salt is built once, not once per token, and it
      derives its key and keys its HMAC once (`LinkSigner`), not once per token.

    These override itsdangerous internals (`dump_payload` skips the URL-safe mixin's, `dumps`
    must ask `make_signer(None)` for the own signer): pyproject.toml pins itsdangerous to the
    minor version this was written against, and tests/test_library_pins.py checks them."""

    default_signer = LinkSigner

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._own_signer = super().make_signer()

    def make_signer(self, salt: str | bytes | None = None) -> Signer:
        return self._own_signer if salt is None else super().make_signer(salt)

    def dumps_signed_at(self, obj: Any, timestamp: int) -> str:
        """`dumps` as if signed at `timestamp` (what `TimestampSigner.sign` writes): the same
        token for the same claims whenever it is made."""
        value = self.dump_payload(obj) + b"." + base64_encode(int_to_bytes(timestamp))
        return (value + b"." + self._own_signer.get_signature(value)).decode("ascii")


@functools.lru_cache(maxsize=32)
def _serializer(secret_key: str, purpose: Purpose) -> LinkSerializer:
    return LinkSerializer(secret_key, salt=f"paperboy.{purpose.value}")


def make_token(
    secret_key: str,
    purpose: Purpose,
    public_id: uuid.UUID,
    token_version: int,
    *subject: str | int,
    signed_at: int | None = None,
) -> str:
    """A link token. `signed_at` (a Unix time) makes it the same token every time it is made,
    for a page that must not change from one request to the next (a feed and its ETag); the
    time only matters to purposes whose links expire."""
    serializer = _serializer(secret_key, purpose)
    claims = [public_id.hex, token_version, *subject]
    if signed_at is not None:
        return serializer.dumps_signed_at(claims, signed_at)
    return str(serializer.dumps(claims))


def read_token(secret_key: str, purpose: Purpose, token: str) -> TokenClaims:
    """The claims of a valid token; TokenError otherwise. The caller still checks the token
    version against the subscriber's current one."""
    try:
        payload = _serializer(secret_key, purpose).loads(token, max_age=MAX_AGE_SECONDS[purpose])
    except SignatureExpired as error:
        raise TokenError("This link has expired.", expired=True) from error
    except BadSignature as error:
        raise TokenError("This link is not valid.") from error
    try:
        public_hex, version, *subject = payload
        if not all(isinstance(part, str | int) for part in subject):
            raise TypeError("a subject is strings and numbers")
        return TokenClaims(uuid.UUID(hex=str(public_hex)), int(version), tuple(subject))
    except (TypeError, ValueError) as error:
        raise TokenError("This link is not valid.") from error
