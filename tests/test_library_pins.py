"""The two places Paperboy reaches into a library's internals, held to the versions they were
written against. `app/mail/transports.py` writes a message's DATA through aiosmtplib's protocol
(`SMTP.protocol`, `SMTPProtocol.write`, `SMTPProtocol.read_response`) instead of `SMTP.data`;
`app/subscribers/tokens.py` replaces itsdangerous's `dump_payload` (no zlib attempt) and
`make_signer` (one signer per serializer). Both were measured much faster than the public paths
(docs/delivery.md, "Hand-written paths and the versions they depend on"), so they stay, and
pyproject.toml pins both libraries to the minor version tested here.

These tests fail, saying what to re-check, when the installed version or the pin leaves that range,
and they exercise every member the code uses: that it exists, its signature, and that it does what
the code relies on (against a real SMTP server for aiosmtplib)."""

from __future__ import annotations

import inspect
import re
import tomllib
import uuid
from importlib.metadata import version

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse
from itsdangerous import Serializer, Signer, URLSafeTimedSerializer
from itsdangerous.timed import TimedSerializer
from itsdangerous.url_safe import URLSafeSerializerMixin
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from app.mail.transports import _transaction, wire_form
from app.subscribers.tokens import LinkSerializer
from tests.conftest import ROOT
from tests.support.smtp_sink import SinkHandler, smtp_sink

# What each hand-written path was written and measured against; pyproject.toml pins the same range.
WRITTEN_AGAINST = {
    "aiosmtplib": (
        SpecifierSet(">=5.1.3,<5.2"),
        "app/mail/transports.py writes DATA through aiosmtplib's private SMTPProtocol.write and "
        "read_response",
    ),
    "itsdangerous": (
        SpecifierSet(">=2.2,<2.3"),
        "app/subscribers/tokens.py overrides URLSafeTimedSerializer.dump_payload and make_signer",
    ),
}
WHAT_TO_DO = (
    "Run tests/test_library_pins.py, tests/test_mailer.py and tests/test_delivery.py against the "
    "new version and re-measure (docs/delivery.md); then move the range in pyproject.toml, "
    "requirements.lock and WRITTEN_AGAINST together, or switch that code to the public API."
)


@pytest.mark.parametrize("name", sorted(WRITTEN_AGAINST))
def test_the_installed_version_is_the_one_the_code_was_written_against(name: str) -> None:
    tested, what = WRITTEN_AGAINST[name]
    installed = version(name)
    assert tested.contains(installed, prereleases=True), (
        f"{name} {installed} is installed, but {what}, written and tested against "
        f"{name}{tested} only. {WHAT_TO_DO}"
    )


@pytest.mark.parametrize("name", sorted(WRITTEN_AGAINST))
def test_the_pins_match_what_was_tested(name: str) -> None:
    tested, what = WRITTEN_AGAINST[name]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = [Requirement(line) for line in project["dependencies"]]
    (pinned,) = [requirement for requirement in required if requirement.name == name]
    assert pinned.specifier == tested, (
        f"pyproject.toml asks for {name}{pinned.specifier}, but {what}, tested against "
        f"{name}{tested} only. {WHAT_TO_DO}"
    )
    locked = re.search(
        rf"^{re.escape(name)}==(\S+)$", (ROOT / "requirements.lock").read_text(), re.MULTILINE
    )
    assert locked is not None, f"requirements.lock has no exact version of {name}"
    assert tested.contains(locked.group(1)), (
        f"requirements.lock installs {name} {locked.group(1)}, outside {name}{tested}. {WHAT_TO_DO}"
    )


def test_aiosmtplib_members_the_transport_uses() -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=25)
    assert client.protocol is None, "SMTP.protocol: the connection's protocol, None until connect"
    assert isinstance(inspect.getattr_static(aiosmtplib.SMTP, "is_ehlo_or_helo_needed"), property)
    assert list(inspect.signature(SMTPProtocol.write).parameters) == ["self", "data"], (
        "SMTPProtocol.write(data) writes bytes to the transport as they are"
    )
    assert inspect.iscoroutinefunction(SMTPProtocol.read_response)
    read_response = inspect.signature(SMTPProtocol.read_response).parameters
    assert (
        list(read_response) == ["self", "timeout"] and read_response["timeout"].default is None
    ), "SMTPProtocol.read_response(timeout=None) awaits the next reply"
    execute = inspect.signature(aiosmtplib.SMTP.execute_command).parameters
    assert execute["args"].kind is inspect.Parameter.VAR_POSITIONAL and "timeout" in execute
    assert "extension" in inspect.signature(aiosmtplib.SMTP.supports_extension).parameters


async def test_data_written_through_the_protocol_keeps_the_connection_in_step() -> None:
    """The DATA reply read with read_response is the one for this message (a refusal included),
    and the connection carries the next command and message with every reply paired."""
    sender, refused, accepted = "digest@example.org", "gone@example.org", "ann@example.org"
    data = b"Subject: hi\r\n\r\n.leading dot\r\n..two dots\r\nlast line\r\n"
    with smtp_sink(SinkHandler(scripted={refused: [550]})) as (sink, port):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=None)
        await client.connect()
        try:
            assert isinstance(client.protocol, SMTPProtocol)
            assert client.is_ehlo_or_helo_needed is False  # connect() said EHLO
            with pytest.raises(aiosmtplib.SMTPDataError) as raised:
                await _transaction(client, sender, refused, data)
            assert raised.value.code == 550
            assert (await client.rset()).code == 250
            delivered = await _transaction(client, sender, accepted, data)
            assert delivered.detail == "2.0.0 OK queued"
            noop = await client.execute_command(b"NOOP")
            assert isinstance(noop, SMTPResponse) and noop.code == 250
            assert (await _transaction(client, sender, accepted, data)).detail == "2.0.0 OK queued"
        finally:
            await client.quit()
    assert sink.received == [(accepted, data), (accepted, data)]
    assert wire_form(data).count(b"\r\n..") == 2


def test_itsdangerous_members_the_link_serializer_overrides() -> None:
    mro = URLSafeTimedSerializer.__mro__
    assert mro.index(URLSafeSerializerMixin) < mro.index(TimedSerializer) < mro.index(Serializer)
    assert "dump_payload" in vars(URLSafeSerializerMixin), (
        "LinkSerializer.dump_payload replaces the mixin's (zlib attempt, then base64)"
    )
    assert list(inspect.signature(Serializer.dump_payload).parameters) == ["self", "obj"]
    make_signer = inspect.signature(Serializer.make_signer).parameters
    assert list(make_signer) == ["self", "salt"] and make_signer["salt"].default is None
    assert inspect.signature(Serializer.dumps).parameters["salt"].default is None


def test_link_serializer_overrides_do_what_the_stock_code_does() -> None:
    secret, salt = "test-secret-key-0123456789", "paperboy.unsubscribe"
    stock = URLSafeTimedSerializer(secret, salt=salt)
    ours = LinkSerializer(secret, salt=salt)
    for version_number in (0, 1, 7, 2**31):
        payload = [uuid.uuid4().hex, version_number]
        # The zlib attempt never wins for a public id and a version: same bytes without it.
        assert ours.dump_payload(payload) == stock.dump_payload(payload)
        assert ours.loads(stock.dumps(payload)) == payload
    # The signer built once signs as the stock serializer's per-call signer does.
    assert ours.make_signer() is ours.make_signer()
    assert ours.make_signer().get_signature(b"x") == stock.make_signer().get_signature(b"x")
    assert ours.make_signer("other").get_signature(b"x") == (
        stock.make_signer("other").get_signature(b"x")
    )

    asked: list[str | bytes | None] = []

    class Watched(LinkSerializer):
        def make_signer(self, salt: str | bytes | None = None) -> Signer:
            asked.append(salt)
            return super().make_signer(salt)

    Watched(secret, salt=salt).dumps(["a", 1])
    assert asked == [None], "dumps asks make_signer(None) for the serializer's own signer"
