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
        bool, typer.Option(help="Trust X-Forwarded-For/Proto from the reverse proxy.")
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
        forwarded_allow_ips="*" if proxy_headers else None,
        log_config=None,
        access_log=access_log,
    )
