"""The delivery engine: sends every due digest through a transport and records each outcome.

Guarantees, which the crash and drill tests hold it to:
- Nothing is lost. A digest is claimed under a lease (`app.mail.queue`); its outcome is committed
  before its slot frees; a crashed worker's leases expire and another worker resumes them.
- Duplicates are bounded. Only messages in flight when a worker dies can be sent again: at most
  `IN_FLIGHT_PER_CONNECTION` per SMTP connection.
- A stopping worker finishes what it has started and gives back at once what it claimed but did
  not start, so other workers need not wait for the lease.
- One broken digest (a rendering error) is reported and never stops the others.

The next batch is claimed and loaded while the current one is sent, so claims never stall the
messages in flight."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import DigestView, DigestViewLoader
from app.mail.message import Mailer
from app.mail.outcomes import OutcomeWriter, SendReport
from app.mail.queue import Outcome, claim_digests, release_digests
from app.mail.transports import Transport, Verdict, open_transport
from app.metrics import SEND_LATENCY, SMTP_ERRORS, error_class
from app.models import DigestStatus
from app.subscribers.localtime import digest_day_end

# Messages in flight per SMTP connection: while one message's outcome is being committed, the
# connection carries the next (with one per connection, connections sat idle through every
# commit: 370 against 440 messages/s in bench/send.py). A crash can repeat at most these.
IN_FLIGHT_PER_CONNECTION = 2
SendProgress = Callable[[SendReport], None]
POLL_SECONDS = 5.0
VIEWS_AT_ONCE = 50  # digests loaded per query while claiming: the event loop breathes between


async def deliver_digests(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    once: bool = True,
    transport: Transport | None = None,
    stop: asyncio.Event | None = None,
    on_progress: SendProgress | None = None,
    close_transport: bool = True,
) -> SendReport:
    """Send every digest that is due. With `once`, stop when none is left to claim; otherwise
    keep polling until `stop` is set (a worker). On stop, in-flight messages finish and the
    claimed but unstarted digests are released at once for other workers."""
    report = SendReport()
    mailer = Mailer(settings)
    transport = transport or open_transport(
        settings.mail_url,
        concurrency=settings.smtp_concurrency,
        rate_limit=settings.smtp_rate_limit,
        timeout=settings.smtp_timeout,
    )
    report.destination = transport.description
    stop = stop or asyncio.Event()
    writer = OutcomeWriter(session_factory, settings, report)
    slots = asyncio.Semaphore(transport.concurrency * IN_FLIGHT_PER_CONNECTION)
    in_flight: set[asyncio.Task[None]] = set()
    started = time.perf_counter()

    async def send_one(view: DigestView, attempts: int) -> None:
        try:
            mail = mailer.message(view)
            sending = time.perf_counter()
            sender = mailer.envelope_sender(view.digest_id)
            delivery = await transport.deliver(sender, view.email, mail.data)
            SEND_LATENCY.observe(time.perf_counter() - sending)
            if delivery.verdict is not Verdict.ACCEPTED:
                SMTP_ERRORS.labels(error_class(delivery.detail)).inc()
            status = {
                Verdict.ACCEPTED: DigestStatus.SENT,
                Verdict.TRY_LATER: DigestStatus.RETRY,
                Verdict.REFUSED: DigestStatus.BOUNCED,
            }[delivery.verdict]
            assert view.digest_id is not None
            await writer.record(
                Outcome(
                    digest_id=view.digest_id,
                    subscriber_id=view.subscriber_id,
                    status=status,
                    detail=delivery.detail,
                    attempts=attempts,
                    day_end=digest_day_end(view.digest_date, view.timezone),
                    message_id=mail.message_id,
                )
            )
            if on_progress is not None:
                on_progress(report)
        except Exception as error:  # one broken digest must not stop the others
            report.errors.append(f"digest {view.digest_id}: {error}")
        finally:
            slots.release()

    # Claimed digests wait here, loaded, for a slot: the next batch is claimed and loaded while
    # this one is sent, in chunks, so neither the claim's round trips nor its Python work hold
    # up the replies of the messages in flight. None marks the end of claiming.
    ready: asyncio.Queue[tuple[DigestView, int] | None] = asyncio.Queue()
    room = asyncio.Semaphore(settings.send_batch_size)  # loaded digests waiting, at most
    undispatched: set[int] = set()  # claimed, not yet handed to a send: released at the end
    views = DigestViewLoader()

    async def claim_batches() -> None:
        while not stop.is_set():
            async with session_factory() as session:
                claimed = await claim_digests(
                    session=session,
                    now=datetime.now(UTC),
                    limit=settings.send_batch_size,
                    lease=timedelta(seconds=settings.send_lease_seconds),
                )
                await session.commit()
                undispatched.update(claimed)
                report.claimed += len(claimed)
                if not claimed:
                    if once:
                        return
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), POLL_SECONDS)
                    continue
                ids = list(claimed)
                for first in range(0, len(ids), VIEWS_AT_ONCE):
                    chunk = ids[first : first + VIEWS_AT_ONCE]
                    for view in await views.load(chunk, session=session):
                        assert view.digest_id is not None
                        await room.acquire()
                        ready.put_nowait((view, claimed[view.digest_id]))

    claiming = asyncio.create_task(claim_batches())
    claiming.add_done_callback(lambda _: ready.put_nowait(None))
    try:
        while (item := await ready.get()) is not None:
            room.release()
            view, attempts = item
            await slots.acquire()
            if stop.is_set():
                slots.release()
                break
            assert view.digest_id is not None
            undispatched.discard(view.digest_id)
            task = asyncio.create_task(send_one(view, attempts))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            # One send starts (and renders) per turn of the event loop, with the replies that came
            # in between read first: when a group commit frees many slots at once, rendering
            # them back to back kept every connection's reply waiting for milliseconds.
            await asyncio.sleep(0)
    finally:
        claiming.cancel()
        claim_error: BaseException | None = None
        try:
            await claiming
        except asyncio.CancelledError:
            pass
        except Exception as error:  # raised once the sends in flight are recorded
            claim_error = error
        if undispatched:
            async with session_factory() as session:
                await release_digests(sorted(undispatched), session=session)
                await session.commit()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        await writer.close()
        if close_transport:
            await transport.close()
        report.seconds = time.perf_counter() - started
    if claim_error is not None:
        raise claim_error
    return report
