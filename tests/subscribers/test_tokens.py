"""Link tokens on their own: each opens exactly the subscriber, purpose and version it was made
for, survives a trip through a URL, and is refused (with the reason a reader is shown) when it
is forged, damaged, made for another purpose or key, or, for confirmation links only, too old;
and every token is recognised wherever it is written down, so that it can be kept out of logs."""

from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import pytest
from itsdangerous import TimestampSigner

from app.subscribers.tokens import (
    LINK_TOKEN,
    MAX_AGE_SECONDS,
    REDACTED_TOKEN,
    LinkSerializer,
    Purpose,
    TokenError,
    make_token,
    read_token,
    redact_link_tokens,
)

SECRET = "token-test-secret-key-0123456789"
READER = uuid.UUID("3f0c5a1e-8d2b-4c6f-9a7e-1b2c3d4e5f60")


def made_at(seconds_ago: float, purpose: Purpose, payload: object) -> str:
    """A token signed `seconds_ago` seconds ago with the key and salt Paperboy uses."""

    class Earlier(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - seconds_ago)

    serializer = LinkSerializer(SECRET, salt=f"paperboy.{purpose.value}", signer=Earlier)
    return str(serializer.dumps(payload))


@pytest.mark.parametrize("purpose", list(Purpose))
def test_a_token_reads_back_as_its_subscriber_and_version(purpose: Purpose) -> None:
    token = make_token(SECRET, purpose, READER, 4)
    claims = read_token(SECRET, purpose, token)
    assert (claims.public_id, claims.token_version) == (READER, 4)
    assert quote(token, safe="") == token  # nothing to escape in a URL path or query


def test_tokens_differ_by_subscriber_version_and_purpose() -> None:
    tokens = {
        make_token(SECRET, purpose, public_id, version)
        for purpose in Purpose
        for public_id in (READER, uuid.uuid4())
        for version in (1, 2)
    }
    assert len(tokens) == len(Purpose) * 2 * 2


def test_a_token_opens_nothing_but_its_own_purpose() -> None:
    for made_for in Purpose:
        token = make_token(SECRET, made_for, READER, 1)
        for used_for in set(Purpose) - {made_for}:
            with pytest.raises(TokenError, match="not valid") as refused:
                read_token(SECRET, used_for, token)
            assert not refused.value.expired


def test_forged_and_damaged_tokens_are_refused() -> None:
    token = make_token(SECRET, Purpose.UNSUBSCRIBE, READER, 1)
    other_key = make_token("another-secret-key-0123456789", Purpose.UNSUBSCRIBE, READER, 1)

    def changed(position: int) -> str:
        # Not the last character: its low bits fall outside the signature's bytes.
        other = "A" if token[position] != "A" else "B"
        return token[:position] + other + token[position + 1 :]

    in_payload, in_signature = changed(0), changed(len(token) - 5)
    for bad in (other_key, in_payload, in_signature, token[:-4], token + "x", "", "a.b.c"):
        with pytest.raises(TokenError, match="not valid"):
            read_token(SECRET, Purpose.UNSUBSCRIBE, bad)


def test_a_signed_token_with_a_payload_of_the_wrong_shape_is_refused() -> None:
    for payload in (["not-a-uuid", 1], [READER.hex], [READER.hex, "two"], {"id": READER.hex}):
        token = made_at(0, Purpose.PREFERENCES, payload)
        with pytest.raises(TokenError, match="not valid"):
            read_token(SECRET, Purpose.PREFERENCES, token)


def test_confirmation_links_expire_and_the_others_do_not() -> None:
    limit = MAX_AGE_SECONDS[Purpose.CONFIRM]
    assert limit is not None
    payload = [READER.hex, 1]
    fresh = made_at(limit - 60, Purpose.CONFIRM, payload)
    assert read_token(SECRET, Purpose.CONFIRM, fresh).public_id == READER
    stale = made_at(limit + 60, Purpose.CONFIRM, payload)
    with pytest.raises(TokenError, match="expired") as refused:
        read_token(SECRET, Purpose.CONFIRM, stale)
    assert refused.value.expired
    # An unsubscribe or preferences link in a mail kept for years still works.
    five_years = 5 * 365 * 24 * 3600
    for purpose in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.DIGEST):
        old = made_at(five_years, purpose, payload)
        assert read_token(SECRET, purpose, old).token_version == 1


def test_a_token_signed_at_a_given_time_is_the_same_every_time_and_the_stock_one() -> None:
    at = int(time.time()) - 3600
    first = make_token(SECRET, Purpose.DIGEST, READER, 2, signed_at=at)
    time.sleep(1.1)  # a token made now carries the second it was made in
    assert make_token(SECRET, Purpose.DIGEST, READER, 2, signed_at=at) == first
    assert make_token(SECRET, Purpose.DIGEST, READER, 2) != first
    # itsdangerous' own bytes for a token signed at that second
    assert first == made_at(time.time() - at - 0.5, Purpose.DIGEST, [READER.hex, 2])
    claims = read_token(SECRET, Purpose.DIGEST, first)
    assert (claims.public_id, claims.token_version) == (READER, 2)


def test_feedback_and_mute_tokens_carry_their_paper_or_topic() -> None:
    more = make_token(SECRET, Purpose.FEEDBACK, READER, 3, 4242, "more")
    claims = read_token(SECRET, Purpose.FEEDBACK, more)
    assert (claims.public_id, claims.token_version, claims.subject) == (READER, 3, (4242, "more"))
    topic = 'Tom\'s "topic" & <more> / ümlaut'
    assert read_token(
        SECRET, Purpose.MUTE, make_token(SECRET, Purpose.MUTE, READER, 1, topic)
    ).subject == (topic,)
    # One purpose's token never opens another's, and a link without a subject has none.
    with pytest.raises(TokenError):
        read_token(SECRET, Purpose.MUTE, more)
    with pytest.raises(TokenError):
        read_token(SECRET, Purpose.FEEDBACK, more[:-2])
    plain = make_token(SECRET, Purpose.PREFERENCES, READER, 1)
    assert read_token(SECRET, Purpose.PREFERENCES, plain).subject == ()


def test_every_token_is_recognised_and_redacted_wherever_it_is_written() -> None:
    subjects: dict[Purpose, tuple[str | int, ...]] = {
        Purpose.FEEDBACK: (123456789, "less"),
        Purpose.MUTE: ("making chatbots respond faster, with a long topic of many words",),
    }
    for purpose in Purpose:
        for version in (1, 12345):
            for reader in (READER, uuid.uuid4()):
                token = make_token(SECRET, purpose, reader, version, *subjects.get(purpose, ()))
                assert LINK_TOKEN.fullmatch(token), token
                line = f'127.0.0.1:5000 - "GET /unsubscribe/{token}?saved=1 HTTP/1.1" 200'
                assert redact_link_tokens(line) == (
                    f'127.0.0.1:5000 - "GET /unsubscribe/{REDACTED_TOKEN}?saved=1 HTTP/1.1" 200'
                )
    # What is not a token stays readable.
    for path in ("/static/paperboy.css", "/openapi.json", "/digests", "/?page=2", "/subscribe"):
        assert redact_link_tokens(path) == path
