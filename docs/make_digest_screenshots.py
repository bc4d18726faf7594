"""Renders a real digest and photographs it for reviewers: a throwaway SQLite database gets the
bundled sample page and the recorded Hugging Face daily papers, one subscriber with three topics,
and a composed digest; the HTML part is written to docs/digest-example.html and headless Chromium
(Debian's /usr/bin/chromium) takes light- and dark-mode screenshots next to it.

    .venv/bin/python docs/make_digest_screenshots.py
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

from app.config import Settings
from app.db import create_engine, create_session_factory, migrate
from app.digests.views import preview_digest_view
from app.jobs import compose_job, ingest_job
from app.mail.message import Mailer
from app.subscribers.rules import Preferences, add_active_subscriber

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SOURCES = [
    ROOT / "app" / "sample" / "trending-papers-page.txt",
    ROOT / "tests" / "data" / "hf-daily.json",
]
TOPICS = ["state space models", "GPU kernels"]
DAY = date(2026, 11, 26)


async def render(workdir: Path) -> str:
    url = f"sqlite+aiosqlite:///{workdir / 'digest.db'}"
    settings = Settings(
        database_url=url,
        base_url="https://papers.example.org",
        mail_from="Paperboy <digest@papers.example.org>",
    )
    engine = create_engine(url)
    await migrate(engine)
    sessions = create_session_factory(engine)
    for source in SOURCES:
        await ingest_job(str(source), session_factory=sessions, settings=settings)
    async with sessions() as session:
        await add_active_subscriber(
            "ada@example.org",
            Preferences(TOPICS, digest_size=8, trending_weight=0.0),
            session=session,
        )
        await session.commit()
    await compose_job(session_factory=sessions, settings=settings, on_date=DAY)
    async with sessions() as session:
        view = await preview_digest_view(
            "ada@example.org",
            session=session,
            settings=settings,
            now=datetime.now(UTC),
            on_date=DAY,
        )
    await engine.dispose()
    return Mailer(settings).render(view).html


def screenshot(page: Path, target: Path, *, dark: bool) -> None:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=680,2200",
        f"--screenshot={target}",
    ]
    if dark:
        command.append("--blink-settings=preferredColorScheme=0")
    subprocess.run([*command, page.as_uri()], check=True, capture_output=True, timeout=120)


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        html = asyncio.run(render(Path(workdir)))
    page = DOCS / "digest-example.html"
    page.write_text(html, encoding="utf-8")
    screenshot(page, DOCS / "digest-light.png", dark=False)
    screenshot(page, DOCS / "digest-dark.png", dark=True)
    print(f"wrote {page}, digest-light.png and digest-dark.png in {DOCS}")


if __name__ == "__main__":
    main()
