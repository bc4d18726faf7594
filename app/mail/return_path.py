"""Which digest a bounce is about, from the addresses and ids we put on the digest: the envelope
sender (VERP: `PAPERBOY_RETURN_PATH` bounces@example.org becomes bounces+1234-TOKEN@example.org
for digest 1234, so that the bounce comes back to an address naming the digest) and the
Message-ID (`<digest.1234.PUBLICID12@domain>`).

The tag is the digest id and a MAC of it under the secret key (64 bits, lower-case base32: mail
systems may fold the case of a local part), so a forged bounce cannot name another reader's
digest. The Message-ID carries the first 12 hex digits of the subscriber's random public id,
which a stranger cannot guess either."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from email.utils import parseaddr

MAC_BYTES = 8
TAG = re.compile(r"(\d{1,19})-([a-z2-7]{13})")
DIGEST_MESSAGE_ID = re.compile(r"<?digest\.(\d{1,19})\.([0-9a-f]{12})@([^>\s]+)>?", re.IGNORECASE)
PUBLIC_ID_CHARS = 12


def _mac(secret_key: str, digest_id: int) -> str:
    digest = hmac.new(
        secret_key.encode(), b"paperboy return path\x00%d" % digest_id, hashlib.sha256
    ).digest()
    return base64.b32encode(digest[:MAC_BYTES]).decode().rstrip("=").lower()


def tagged_return_path(return_path: str, secret_key: str, digest_id: int) -> str:
    """The envelope sender of one digest: RETURN_PATH with `+ID-MAC` after its local part."""
    local, _, domain = return_path.partition("@")
    return f"{local}+{digest_id}-{_mac(secret_key, digest_id)}@{domain}"


def digest_id_from_return_path(address: str, *, return_path: str, secret_key: str) -> int | None:
    """The digest a tagged envelope sender names, or None when the address is not ours or its
    tag does not verify. `address` may be a header value (`<...>`, a display name)."""
    bare = parseaddr(address)[1] or address.strip()
    local, _, domain = bare.rpartition("@")
    base_local, _, base_domain = return_path.partition("@")
    if domain.lower() != base_domain.lower():
        return None
    prefix = base_local.lower() + "+"
    if not local.lower().startswith(prefix):
        return None
    match = TAG.fullmatch(local[len(prefix) :].lower())
    if match is None:
        return None
    digest_id = int(match.group(1))
    if not hmac.compare_digest(match.group(2), _mac(secret_key, digest_id)):
        return None
    return digest_id


def digest_message_id(digest_id: int, public_id_hex: str, domain: str) -> str:
    """The Message-ID of a digest: the same for every attempt, so that a mail client folds a
    rare resend into one."""
    return f"<digest.{digest_id}.{public_id_hex[:PUBLIC_ID_CHARS]}@{domain}>"


@dataclass(frozen=True, slots=True)
class DigestMessageId:
    digest_id: int
    public_id_prefix: str  # to be checked against the digest's subscriber


def read_digest_message_id(value: str, *, domain: str) -> DigestMessageId | None:
    """What a Message-ID of ours names (None for any other id). Providers may drop the angle
    brackets (Mailgun) or change the case of the domain."""
    match = DIGEST_MESSAGE_ID.fullmatch(value.strip())
    if match is None or match.group(3).lower() != domain.lower():
        return None
    return DigestMessageId(int(match.group(1)), match.group(2).lower())
