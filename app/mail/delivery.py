"""The delivery engine: sends every due digest through a transport and records each outcome.

Guarantees, which the crash and drill tests hold it to:
- Nothing is lost. A digest is claimed under a lease (`app.mail.queue`); its outcome is committed
  before its slot frees; a crashed worker's leases expire and another worker resumes them.
- Duplicates are bounded. Only messages in flight when a worker dies can be sent again: at most
  `IN_FLIGHT_PER_CONNECTION` per SMTP connection.
- A stopping worker finishes what it has started and gives back at once what it claimed but did
  not start, so other workers need not wait for the lease.
- One broken digest (a rendering error) is reported and never stops the others.
- No subscriber pays for our configuration. A refusal about us (relay denied, authentication
  required, policy: `app.mail.replies`) is never a bounce: the digest waits for a retry. When
  such refusals come for `HALT_AFTER_REFUSALS` recipients in a row (or for every recipient a
  smaller run tried), the run stops sending, gives back what it has not started, logs one error
  and records the refusal for the admin stats and /metrics; a worker that keeps running tries
  again after a backoff.
- A dead worker's leases can be told from a live one's: each run beats while it runs
  (`app.mail.workers`), and `reclaim` releases a dead worker's leases before the run claims.

The next batch is claimed and loaded while the current one is sent, so claims never stall the
messages in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.digests.views import DigestView, DigestViewLoader
from app.mail.message import Mailer
from app.mail.outcomes import OutcomeWriter, SendReport
from app.mail.queue import (
    Outcome,
    claim_digests,
    release_digests,
    retry_delay,
    waiting_retries,
)
from app.mail.replies import Verdict
from app.mail.transports import Transport, open_transport
from app.mail.workers import WorkerHeartbeat, aware, held_digests, reclaim_dead_leases
from app.metrics import SEND_LATENCY, SMTP_ERRORS, error_class
from app.models import DigestStatus
from app.subscribers.localtime import digest_day_end

logger = logging.getLogger("paperboy.delivery")

# Messages in flight per SMTP connection: while one message's outcome is being committed, the
# connection carries the next (with one per connection, connections sat idle through every
# commit: 370 against 440 messages/s in bench/send.py). A crash can repeat at most these.
IN_FLIGHT_PER_CONNECTION = 2
SendProgress = Callable[[SendReport], None]
POLL_SECONDS = 5.0
VIEWS_AT_ONCE = 50  # digests loaded per query while claiming: the event loop breathes between
# Refusals about us, for this many different recipients with nothing accepted in between, stop
# the run: one recipient's domain may refuse us on its own, a relay that refuses three refuses
# all.
HALT_AFTER_REFUSALS = 3
# What each verdict makes of the digest. A refusal about us waits like a 4xx: the subscriber is
# not at fault, and the digest goes once our configuration is fixed.
DIGEST_STATUS = {
    Verdict.ACCEPTED: DigestStatus.SENT,
    Verdict.TRY_LATER: DigestStatus.RETRY,
    Verdict.REFUSED_US: DigestStatus.RETRY,
    Verdict.REFUSED: DigestStatus.BOUNCED,
}


class RefusalWatch:
    """Tells a refusal about us that repeats across recipients from one recipient's own."""

    def __init__(self) -> None:
        self.recipients: set[str] = set()  # who refused us since a message was last accepted
        self.accepted = False
        self.last: str | None = None

    def saw(self, verdict: Verdict, recipient: str, detail: str) -> bool:
        """Note one answer; True when the run must stop."""
        if verdict is Verdict.ACCEPTED:
            self.accepted = True
            self.recipients.clear()
        elif verdict is Verdict.REFUSED_US:
            self.recipients.add(recipient)
            self.last = detail
        return len(self.recipients) >= HALT_AFTER_REFUSALS

    def refusal(self) -> str | None:
        """The refusal that stops the run: repeated, or every recipient's in a smaller run."""
        if len(self.recipients) >= HALT_AFTER_REFUSALS or (self.recipients and not self.accepted):
            return self.last
        return None


async def until_set(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` have passed."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def deliver_digests(
    *,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    once: bool = True,
    transport: Transport | None = None,
    stop: asyncio.Event | None = None,
    on_progress: SendProgress | None = None,
    close_transport: bool = True,
    reclaim: bool = False,
) -> SendReport:
    """Send every digest that is due. With `once`, stop when none is left to claim; otherwise
    keep polling until `stop` is set (a worker). On stop, in-flight messages finish and the
    claimed but unstarted digests are released at once for other workers. With `reclaim`, the
    leases of workers known dead are released first. The report ends with the digests still
    leased (to other workers, or dead ones)."""
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
    started = time.perf_counter()
    heartbeat = WorkerHeartbeat(
        session_factory, interval=settings.send_heartbeat_seconds, sent=lambda: report.sent
    )
    worker = await heartbeat.start()
    writer = OutcomeWriter(session_factory, settings, report)
    rounds = SendRounds(
        session_factory=session_factory,
        settings=settings,
        transport=transport,
        mailer=mailer,
        writer=writer,
        report=report,
        worker=worker,
        on_progress=on_progress,
    )
    try:
        if reclaim:
            async with session_factory() as session:
                report.reclaimed = await reclaim_dead_leases(
                    session=session,
                    now=datetime.now(UTC),
                    heartbeat_seconds=settings.send_heartbeat_seconds,
                )
                await session.commit()
        pauses = 0
        while True:
            report.halted = await rounds.send(once=once, stop=stop)
            if report.halted is None:
                break
            await heartbeat.refused(report.halted)
            if once or stop.is_set():
                logger.error("%s", report.halted_message)
                break
            pauses += 1
            pause = retry_delay(
                pauses,
                base=settings.retry_base_seconds,
                ceiling=settings.retry_max_seconds,
                rng=random.Random(),  # noqa: S311 - jitter, not secrecy
            ).total_seconds()
            logger.error("%s Trying again in %.0f s.", report.halted_message, pause)
            await until_set(stop, pause)
            if stop.is_set():
                break
    finally:
        await writer.close()
        await heartbeat.stop()
        if close_transport:
            await transport.close()
        report.seconds = time.perf_counter() - started
    async with session_factory() as session:  # what is left, and why
        now = datetime.now(UTC)
        report.held = await held_digests(
            session=session, now=now, heartbeat_seconds=settings.send_heartbeat_seconds
        )
        report.retries_waiting, next_retry = await waiting_retries(session=session, now=now)
        report.next_retry = aware(next_retry) if next_retry else None
    return report


class SendRounds:
    """A run's sending: a round claims and sends until nothing is left (`once`), `stop` is set,
    or refusals about us stop it. A worker that keeps running starts a new round after such a
    stop; the transport, the outcome writer and the view caches serve every round."""

    def __init__(
        self,
        *,
        session_factory: async_sessionmaker[AsyncSession],
        settings: Settings,
        transport: Transport,
        mailer: Mailer,
        writer: OutcomeWriter,
        report: SendReport,
        worker: int,
        on_progress: SendProgress | None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.transport = transport
        self.mailer = mailer
        self.writer = writer
        self.report = report
        self.worker = worker
        self.on_progress = on_progress
        self.slots = asyncio.Semaphore(transport.concurrency * IN_FLIGHT_PER_CONNECTION)
        self.views = DigestViewLoader()

    async def send(self, *, once: bool, stop: asyncio.Event) -> str | None:
        """One round; the refusal about us that stopped it, or None."""
        session_factory, settings, report = self.session_factory, self.settings, self.report
        slots = self.slots
        watch = RefusalWatch()
        halted = asyncio.Event()
        in_flight: set[asyncio.Task[None]] = set()

        def ending() -> bool:
            return stop.is_set() or halted.is_set()

        async def send_one(view: DigestView, attempts: int) -> None:
            try:
                mail = self.mailer.message(view)
                sending = time.perf_counter()
                delivery = await self.transport.deliver(
                    self.mailer.envelope_sender(view.digest_id), view.email, mail.data
                )
                SEND_LATENCY.observe(time.perf_counter() - sending)
                if delivery.verdict is not Verdict.ACCEPTED:
                    SMTP_ERRORS.labels(error_class(delivery.detail)).inc()
                if delivery.verdict is Verdict.REFUSED_US:
                    report.refused_us += 1
                if watch.saw(delivery.verdict, view.email, delivery.detail):
                    halted.set()
                assert view.digest_id is not None
                await self.writer.record(
                    Outcome(
                        digest_id=view.digest_id,
                        subscriber_id=view.subscriber_id,
                        status=DIGEST_STATUS[delivery.verdict],
                        detail=delivery.detail,
                        attempts=attempts,
                        day_end=digest_day_end(view.digest_date, view.timezone),
                        message_id=mail.message_id,
                    )
                )
                if self.on_progress is not None:
                    self.on_progress(report)
            except Exception as error:  # one broken digest must not stop the others
                report.errors.append(f"digest {view.digest_id}: {error}")
            finally:
                slots.release()

        # Claimed digests wait here, loaded, for a slot: the next batch is claimed and loaded
        # while this one is sent, in chunks, so neither the claim's round trips nor its Python
        # work hold up the replies of the messages in flight. None marks the end of claiming.
        ready: asyncio.Queue[tuple[DigestView, int] | None] = asyncio.Queue()
        room = asyncio.Semaphore(settings.send_batch_size)  # loaded digests waiting, at most
        undispatched: set[int] = set()  # claimed, not yet handed to a send: released at the end

        claims: set[asyncio.Task[dict[int, int]]] = set()  # claims committing

        async def claim_batch() -> dict[int, int]:
            """Claim and commit a batch, and note it as undispatched: whole, even when the round
            ends meanwhile (a claim cut short between its commit and that note leaked its
            leases until they ran out)."""
            async with session_factory() as session:
                claimed = await claim_digests(
                    session=session,
                    now=datetime.now(UTC),
                    limit=settings.send_batch_size,
                    lease=timedelta(seconds=settings.send_lease_seconds),
                    worker=self.worker,
                )
                await session.commit()
            undispatched.update(claimed)
            report.claimed += len(claimed)
            return claimed

        async def claim_batches() -> None:
            while not ending():
                claim = asyncio.create_task(claim_batch())
                claims.add(claim)
                claim.add_done_callback(claims.discard)
                claimed = await asyncio.shield(claim)
                if not claimed:
                    if once:
                        return
                    await until_set(stop, POLL_SECONDS)
                    continue
                ids = list(claimed)
                async with session_factory() as session:
                    for first in range(0, len(ids), VIEWS_AT_ONCE):
                        chunk = ids[first : first + VIEWS_AT_ONCE]
                        for view in await self.views.load(chunk, session=session):
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
                if ending():
                    slots.release()
                    break
                assert view.digest_id is not None
                undispatched.discard(view.digest_id)
                task = asyncio.create_task(send_one(view, attempts))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                # One send starts (and renders) per turn of the event loop, with the replies
                # that came in between read first: when a group commit frees many slots at
                # once, rendering them back to back kept every connection's reply waiting for
                # milliseconds.
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
            for claim in list(claims):  # a claim still committing: its digests are released too
                try:
                    await claim
                except Exception as error:
                    claim_error = claim_error or error
            if undispatched:
                async with session_factory() as session:
                    await release_digests(sorted(undispatched), session=session)
                    await session.commit()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        if claim_error is not None:
            raise claim_error
        return watch.refusal()
