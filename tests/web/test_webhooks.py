"""Provider webhooks over real HTTP (the app under uvicorn), with the providers' documented
payloads from tests/data/webhooks signed as each provider signs them: Amazon SNS (an RSA key
and certificate made here, served from a local origin: nothing is fetched from the network),
SendGrid (ECDSA), Mailgun (HMAC) and Postmark (basic auth). Each is closed until configured; a
bad signature is refused and records nothing; a replay records nothing twice; a hard bounce
suppresses and a complaint unsubscribes the reader the digest went to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from app.config import Settings
from app.mail.bounces.ses import amazon_url
from app.mail.bounces.webhook import WebhookRefused
from app.models import DeliveryEvent, DeliveryEventKind, Subscriber, SubscriberStatus
from tests.support.bounces import SECRET_KEY, Sessions, bounce_settings, send_digests
from tests.support.http_server import Route, serve
from tests.support.web_app import ADMIN_TOKEN, serve_app

WEBHOOKS = Path(__file__).resolve().parents[1] / "data" / "webhooks"
TOPIC = "arn:aws:sns:us-west-2:123456789012:MyTopic"
CERTIFICATE_PATH = "/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
POSTMARK_AUTH = ("postmark", "correct-horse-battery-staple")
MAILGUN_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def payload(name: str) -> Any:
    return json.loads((WEBHOOKS / name).read_text())


@pytest.fixture(scope="module")
def sns_signer() -> tuple[rsa.RSAPrivateKey, bytes]:
    """An RSA key and a self-signed certificate for it, as SNS's signing certificate."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM)


def sns_string_to_sign(message: dict[str, Any]) -> bytes:
    """As the SNS developer guide ("Verifying the signatures of Amazon SNS messages") says."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{n}\n{message[n]}\n" for n in names if n in message).encode()


def signed_sns(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "1") -> bytes:
    message = dict(message, SignatureVersion=version)
    # SignatureVersion 1 is SHA1 with RSA, as SNS still sends by default.
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
    signature = key.sign(sns_string_to_sign(message), padding.PKCS1v15(), algorithm)
    message["Signature"] = base64.b64encode(signature).decode()
    return json.dumps(message).encode()


def ses_notification(name: str, origin: str, **replace: str) -> dict[str, Any]:
    ses = (WEBHOOKS / name).read_text()
    for old, new in replace.items():
        ses = ses.replace(old, new)
    envelope = payload("sns-notification.json")
    envelope["Message"] = json.dumps(json.loads(ses))
    envelope["SigningCertURL"] = origin + CERTIFICATE_PATH
    return dict(envelope)


async def events_in(sessions: Sessions) -> list[DeliveryEvent]:
    async with sessions() as session:
        return list((await session.scalars(select(DeliveryEvent).order_by(DeliveryEvent.id))).all())


async def status_of(sessions: Sessions, email: str) -> SubscriberStatus:
    async with sessions() as session:
        return (
            await session.scalars(select(Subscriber.status).where(Subscriber.email == email))
        ).one()


@pytest.fixture
def sns_origin(sns_signer: tuple[rsa.RSAPrivateKey, bytes]) -> Iterator[Any]:
    confirm = payload("sns-subscription-confirmation.json")["SubscribeURL"]
    routes = {
        CERTIFICATE_PATH: Route(body=sns_signer[1]),
        confirm.removeprefix("https://sns.us-west-2.amazonaws.com"): Route(
            body=b"<ConfirmSubscriptionResponse/>"
        ),
    }
    with serve(routes) as origin:
        yield origin


async def test_every_webhook_is_closed_until_its_secret_is_set(settings: Settings) -> None:
    with serve_app(settings) as web:
        async with httpx.AsyncClient(base_url=web.base_url) as client:
            for provider in ("ses", "postmark", "sendgrid", "mailgun"):
                answer = await client.post(f"/webhooks/{provider}", content=b"[]")
                assert answer.status_code == 404, provider


async def test_ses_notifications_over_sns_are_verified_and_applied_once(
    session_factory: Sessions,
    settings: Settings,
    sample_page: Path,
    sns_signer: tuple[rsa.RSAPrivateKey, bytes],
    sns_origin: Any,
) -> None:
    key = sns_signer[0]
    config = bounce_settings(settings)
    sent = await send_digests(
        session_factory, config, sample_page, ["jane@example.com", "richard@example.com"]
    )
    jane = sent["jane@example.com"]
    origin = sns_origin.base_url
    # SES's example, about Jane's digest (by its Message-ID, which SES reports).
    bounce = ses_notification("ses-bounce.json", origin, **{"custom-message-ID": jane.message_id})
    # Reported now (the example's 2016 is before any digest of the test was sent).
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    complaint = ses_notification("ses-complaint.json", origin, **{"2016-01-27T14:59:38.237Z": now})
    with serve_app(
        config, secret_key=SECRET_KEY, ses_topic_arns=[TOPIC], sns_test_origin=origin
    ) as web:
        async with httpx.AsyncClient(base_url=web.base_url, timeout=30) as client:

            async def post(body: bytes) -> httpx.Response:
                return await client.post(
                    "/webhooks/ses",
                    content=body,
                    headers={
                        "x-amz-sns-message-type": "Notification",
                        "content-type": "text/plain",
                    },
                )

            # Forgeries first: nothing they carry is recorded.
            tampered = json.loads(signed_sns(bounce, key))
            tampered["Message"] = tampered["Message"].replace("Permanent", "Permanent ")
            assert (await post(json.dumps(tampered).encode())).status_code == 403
            other_topic = dict(bounce, TopicArn="arn:aws:sns:us-west-2:999999999999:Theirs")
            assert (await post(signed_sns(other_topic, key))).status_code == 403
            elsewhere = dict(bounce, SigningCertURL="https://sns.evil.example/cert.pem")
            refused = await post(signed_sns(elsewhere, key))
            assert (
                refused.status_code == 403 and "not an Amazon SNS URL" in refused.json()["detail"]
            )
            unsigned = dict(bounce, SignatureVersion="3")
            assert (await post(json.dumps(unsigned).encode())).status_code == 403
            assert await events_in(session_factory) == []

            first = await post(signed_sns(bounce, key, version="1"))
            assert first.status_code == 200, first.text
            assert first.json() == {"recorded": 1, "unmatched": 0, "duplicates": 0}
            replay = await post(signed_sns(bounce, key, version="1"))
            assert replay.json() == {"recorded": 0, "unmatched": 0, "duplicates": 1}
            answer = await post(signed_sns(complaint, key, version="2"))
            assert answer.json() == {"recorded": 1, "unmatched": 0, "duplicates": 0}
    assert sns_origin.hits[CERTIFICATE_PATH] == 1  # fetched once, then kept
    assert sum(sns_origin.hits.values()) == 1  # the forged certificate URL was never fetched
    assert await status_of(session_factory, "jane@example.com") is SubscriberStatus.BOUNCED
    assert await status_of(session_factory, "richard@example.com") is SubscriberStatus.UNSUBSCRIBED
    bounced, complained = await events_in(session_factory)
    assert (bounced.kind, bounced.source, bounced.digest_id) == (
        DeliveryEventKind.HARD_BOUNCE,
        "ses",
        jane.digest_id,
    )
    assert "Permanent/General 5.1.1" in bounced.detail and bounced.action == "suppressed"
    assert complained.kind is DeliveryEventKind.COMPLAINT
    assert complained.digest_id == sent["richard@example.com"].digest_id  # by address
    assert "abuse complaint via Amazon SES from AnyCompany Feedback Loop" in complained.detail


async def test_an_sns_subscription_is_confirmed_only_when_signed_for_our_topic(
    settings: Settings, sns_signer: tuple[rsa.RSAPrivateKey, bytes], sns_origin: Any
) -> None:
    key = sns_signer[0]
    origin = sns_origin.base_url
    confirmation = payload("sns-subscription-confirmation.json")
    confirm_path = confirmation["SubscribeURL"].removeprefix("https://sns.us-west-2.amazonaws.com")
    confirmation["SubscribeURL"] = origin + confirm_path
    confirmation["SigningCertURL"] = origin + CERTIFICATE_PATH
    with serve_app(settings, ses_topic_arns=[TOPIC], sns_test_origin=origin) as web:
        async with httpx.AsyncClient(base_url=web.base_url, timeout=30) as client:
            forged = dict(confirmation, Signature=base64.b64encode(b"x" * 256).decode())
            assert (
                await client.post("/webhooks/ses", content=json.dumps(forged))
            ).status_code == 403
            stranger = dict(confirmation, TopicArn="arn:aws:sns:us-west-2:999999999999:Theirs")
            answer = await client.post("/webhooks/ses", content=signed_sns(stranger, key))
            assert answer.status_code == 403
            assert sns_origin.hits[confirm_path] == 0
            # A confirmation that would send us to another host is refused before any fetch.
            redirected = dict(confirmation, SubscribeURL="https://evil.example/confirm")
            answer = await client.post("/webhooks/ses", content=signed_sns(redirected, key))
            assert answer.status_code == 403 and sns_origin.hits[confirm_path] == 0
            answer = await client.post("/webhooks/ses", content=signed_sns(confirmation, key))
            assert answer.status_code == 200 and answer.json() == {"confirmed": TOPIC}
    assert sns_origin.hits[confirm_path] == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-1.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com:8443/SimpleNotificationService-1.pem",
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.txt",
        "http://127.0.0.1:9/SimpleNotificationService-1.pem",
    ],
)
def test_only_amazon_sns_hosts_may_serve_the_signing_certificate(url: str) -> None:
    with pytest.raises(WebhookRefused):
        amazon_url(url, test_origin=None, suffix=".pem")


def test_amazon_sns_hosts_of_every_region_are_accepted() -> None:
    for url in (
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-1.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem",
    ):
        assert amazon_url(url, test_origin=None, suffix=".pem") == url


async def test_postmark_bounces_and_complaints_need_the_webhook_credentials(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    config = bounce_settings(settings)
    await send_digests(session_factory, config, sample_page, ["john@example.com"])
    bounce = (WEBHOOKS / "postmark-bounce.json").read_bytes()
    complaint = (WEBHOOKS / "postmark-spam-complaint.json").read_bytes()
    with serve_app(config, postmark_webhook_auth=":".join(POSTMARK_AUTH)) as web:
        async with httpx.AsyncClient(base_url=web.base_url, timeout=30) as client:
            missing = await client.post("/webhooks/postmark", content=bounce)
            assert missing.status_code == 401 and "Basic" in missing.headers["www-authenticate"]
            wrong = await client.post(
                "/webhooks/postmark", content=bounce, auth=("postmark", "guess")
            )
            assert wrong.status_code == 401
            assert await events_in(session_factory) == []
            answer = await client.post("/webhooks/postmark", content=bounce, auth=POSTMARK_AUTH)
            assert answer.json() == {"recorded": 1, "unmatched": 0, "duplicates": 0}
            assert await status_of(session_factory, "john@example.com") is SubscriberStatus.BOUNCED
            again = await client.post("/webhooks/postmark", content=bounce, auth=POSTMARK_AUTH)
            assert again.json()["duplicates"] == 1
            answer = await client.post("/webhooks/postmark", content=complaint, auth=POSTMARK_AUTH)
            assert answer.json() == {"recorded": 1, "unmatched": 0, "duplicates": 0}
            delivery = {"RecordType": "Delivery", "Email": "john@example.com", "ID": 7}
            answer = await client.post("/webhooks/postmark", json=delivery, auth=POSTMARK_AUTH)
            assert answer.json() == {"recorded": 0, "unmatched": 0, "duplicates": 0}
            broken = await client.post("/webhooks/postmark", content=b"{", auth=POSTMARK_AUTH)
            assert broken.status_code == 400
            # Operators see what each report did, and why a reader left.
            assert (await client.get("/admin/api/delivery-events")).status_code == 401
            listed = await client.get(
                "/admin/api/delivery-events",
                params={"kind": "complaint"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            [shown] = listed.json()["items"]
            assert shown["source"] == "postmark" and shown["recipient"] == "john@example.com"
            assert shown["detail"] == "SpamComplaint (512): Test spam complaint details"
    bounced, complained = await events_in(session_factory)
    assert bounced.kind is DeliveryEventKind.HARD_BOUNCE
    assert bounced.detail == "HardBounce (1): Test bounce details"
    # Already bounced: the complaint is recorded, and there is nothing left to unsubscribe.
    assert (complained.kind, complained.action) == (
        DeliveryEventKind.COMPLAINT,
        "none: already bounced",
    )


def sendgrid_signed(
    body: bytes, key: ec.EllipticCurvePrivateKey, timestamp: str = "1513299569"
) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        "Content-Type": "application/json",
    }


async def test_sendgrid_event_batches_are_verified_with_the_ecdsa_key(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    # As SendGrid shows its verification key: base64 of the DER public key.
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    addresses = ["bounce@example.com", "blocked@example.com", "deferred@example.com"]
    addresses += ["spamreport@example.com", "open@example.com"]
    config = bounce_settings(settings)
    await send_digests(session_factory, config, sample_page, addresses)
    body = (WEBHOOKS / "sendgrid-events.json").read_bytes()
    with serve_app(config, sendgrid_webhook_public_key=public) as web:
        async with httpx.AsyncClient(base_url=web.base_url, timeout=30) as client:
            unsigned = await client.post("/webhooks/sendgrid", content=body)
            assert unsigned.status_code == 403
            other_key = ec.generate_private_key(ec.SECP256R1())
            forged = await client.post(
                "/webhooks/sendgrid", content=body, headers=sendgrid_signed(body, other_key)
            )
            assert forged.status_code == 403
            altered = await client.post(
                "/webhooks/sendgrid",
                content=body.replace(b"deferred@", b"open@"),
                headers=sendgrid_signed(body, key),
            )
            assert altered.status_code == 403
            assert await events_in(session_factory) == []
            answer = await client.post(
                "/webhooks/sendgrid", content=body, headers=sendgrid_signed(body, key)
            )
            # bounce, blocked, deferred and spamreport; processed, delivered, open, click and
            # unsubscribe are not failures.
            assert answer.json() == {"recorded": 4, "unmatched": 0, "duplicates": 0}
            replay = await client.post(
                "/webhooks/sendgrid", content=body, headers=sendgrid_signed(body, key, "1513299999")
            )
            assert replay.json() == {"recorded": 0, "unmatched": 0, "duplicates": 4}
    kinds = {event.recipient: event.kind for event in await events_in(session_factory)}
    assert kinds == {
        "deferred@example.com": DeliveryEventKind.SOFT_BOUNCE,
        "bounce@example.com": DeliveryEventKind.HARD_BOUNCE,
        "blocked@example.com": DeliveryEventKind.BLOCKED,
        "spamreport@example.com": DeliveryEventKind.COMPLAINT,
    }
    expected = {
        "bounce@example.com": SubscriberStatus.BOUNCED,
        "blocked@example.com": SubscriberStatus.ACTIVE,
        "deferred@example.com": SubscriberStatus.ACTIVE,
        "spamreport@example.com": SubscriberStatus.UNSUBSCRIBED,
        "open@example.com": SubscriberStatus.ACTIVE,
    }
    for address, status in expected.items():
        assert await status_of(session_factory, address) is status, address


def mailgun_signed(name: str, **event: object) -> dict[str, Any]:
    body: dict[str, Any] = payload(name)
    body["event-data"].update(event)
    token = hashlib.sha256(name.encode()).hexdigest()[:50]
    body["signature"] = {
        "timestamp": "1529006854",
        "token": token,
        "signature": hmac.new(
            MAILGUN_KEY.encode(), ("1529006854" + token).encode(), hashlib.sha256
        ).hexdigest(),
    }
    return body


async def test_mailgun_events_are_verified_with_the_signing_key(
    session_factory: Sessions, settings: Settings, sample_page: Path
) -> None:
    config = bounce_settings(settings, bounce_limit=2)
    await send_digests(
        session_factory, config, sample_page, ["alice@example.com", "bob@example.com"]
    )
    with serve_app(config, mailgun_webhook_signing_key=MAILGUN_KEY) as web:
        async with httpx.AsyncClient(base_url=web.base_url, timeout=30) as client:
            # The documentation's own signature was made with another key.
            as_documented = await client.post(
                "/webhooks/mailgun", json=payload("mailgun-failed-permanent.json")
            )
            assert as_documented.status_code == 403
            forged = mailgun_signed("mailgun-failed-permanent.json")
            forged["signature"]["timestamp"] = "1529006855"
            assert (await client.post("/webhooks/mailgun", json=forged)).status_code == 403
            assert await events_in(session_factory) == []

            for name in ("mailgun-failed-temporary.json", "mailgun-failed-permanent.json"):
                answer = await client.post("/webhooks/mailgun", json=mailgun_signed(name))
                assert answer.json() == {"recorded": 1, "unmatched": 0, "duplicates": 0}
            replay = await client.post(
                "/webhooks/mailgun", json=mailgun_signed("mailgun-failed-permanent.json")
            )
            assert replay.json()["duplicates"] == 1
            complaint = mailgun_signed("mailgun-complained.json", recipient="bob@example.com")
            answer = await client.post("/webhooks/mailgun", json=complaint)
            assert answer.json()["recorded"] == 1
            stranger = mailgun_signed(
                "mailgun-complained.json", recipient="nobody@example.com", id="other-event"
            )
            answer = await client.post("/webhooks/mailgun", json=stranger)
            assert answer.json() == {"recorded": 0, "unmatched": 1, "duplicates": 0}
            # Fields of the wrong shape are read as absent, not a crash.
            odd = mailgun_signed(
                "mailgun-failed-permanent.json",
                id="odd-event",
                **{"delivery-status": "oops", "message": [], "recipient": "odd@example.com"},
            )
            answer = await client.post("/webhooks/mailgun", json=odd)
            assert answer.json() == {"recorded": 0, "unmatched": 1, "duplicates": 0}
    # One hard bounce of two allowed: counted, still active; the complaint unsubscribed Bob.
    async with session_factory() as session:
        alice = (
            await session.scalars(select(Subscriber).where(Subscriber.email == "alice@example.com"))
        ).one()
    assert (alice.status, alice.bounce_count) == (SubscriberStatus.ACTIVE, 1)
    assert await status_of(session_factory, "bob@example.com") is SubscriberStatus.UNSUBSCRIBED
    kinds = [(e.kind, e.recipient) for e in await events_in(session_factory)]
    assert kinds == [
        (DeliveryEventKind.SOFT_BOUNCE, "alice@example.com"),
        (DeliveryEventKind.HARD_BOUNCE, "alice@example.com"),
        (DeliveryEventKind.COMPLAINT, "bob@example.com"),
        (DeliveryEventKind.COMPLAINT, "nobody@example.com"),
        (DeliveryEventKind.HARD_BOUNCE, "odd@example.com"),
    ]


def test_a_bad_sendgrid_key_or_postmark_password_stops_the_start() -> None:
    from tests.conftest import isolated_settings

    with pytest.raises(ValueError, match="not a public key in PEM or base64 DER"):
        isolated_settings(sendgrid_webhook_public_key="not a key")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    pem = rsa_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with pytest.raises(ValueError, match="not an elliptic-curve"):
        isolated_settings(sendgrid_webhook_public_key=pem)
    with pytest.raises(ValueError, match="the password at least 16"):
        isolated_settings(postmark_webhook_auth="postmark:short")
    with pytest.raises(ValueError, match="not an SNS topic ARN"):
        isolated_settings(ses_topic_arns="arn:aws:s3:::bucket")
    production = {
        "environment": "production",
        "secret_key": "x" * 40,
        "base_url": "https://papers.example.net",
        "mail_from": "Paperboy <digest@papers.example.net>",
    }
    isolated_settings(**production)
    with pytest.raises(ValueError, match="PAPERBOY_SNS_TEST_ORIGIN is for tests"):
        isolated_settings(**production, sns_test_origin="http://127.0.0.1:9")
