"""`paperboy web`: the web app (public pages and admin API) under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from app.cli.base import checked_settings, cli, console


@cli.command("web")
def web_command(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Processes (each its own event loop).")] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = True,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            help="Take the client's address and scheme from X-Forwarded-For/Proto, when the "
            "request comes from a proxy named in PAPERBOY_FORWARDED_ALLOW_IPS."
        ),
    ] = False,
) -> None:
    """Serve the public pages and the admin API (PAPERBOY_ADMIN_TOKEN opens it)."""
    settings = checked_settings()
    console.print(f"Paperboy web on http://{host}:{port} (public links use {settings.base_url})")
    uvicorn.run(
        "app.web:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=proxy_headers,
        # Only the configured proxies: anyone else could name any address in X-Forwarded-For
        # and sign up under a new one with each request.
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_config=None,
        access_log=access_log,
    )
