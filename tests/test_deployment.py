"""The deployment files, checked without a Docker engine: docker-compose.yml has the services,
health checks, start order and configuration the README promises; the Dockerfile builds from the
lock file and runs as a non-root user; the lock file pins every runtime dependency."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import yaml

from tests.conftest import ROOT


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_compose_services_and_start_order() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", "web", "scheduler", "worker", "mailpit"}
    postgres = services["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert "postgres-data" in compose()["volumes"]
    migrate = services["migrate"]
    assert migrate["command"] == ["paperboy", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("web", "scheduler", "worker"):
        service = services[name]
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["command"][:2] == ["paperboy", name]
        environment = service["environment"]
        assert environment["PAPERBOY_DATABASE_URL"].startswith("postgresql+asyncpg://")
        for setting in ("PAPERBOY_SECRET_KEY", "PAPERBOY_BASE_URL", "PAPERBOY_MAIL_URL"):
            assert setting in environment
    assert services["scheduler"]["deploy"]["replicas"] == 1
    assert "8000:8000" in services["web"]["ports"]
    assert services["web"]["environment"]["PAPERBOY_MAIL_URL"].endswith("mailpit:1025}")


def test_compose_configuration_is_all_environment() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    variables = set(re.findall(r"\$\{(PAPERBOY_[A-Z_]+)", text))
    assert {"PAPERBOY_SECRET_KEY", "PAPERBOY_BASE_URL", "PAPERBOY_ADMIN_TOKEN"} <= variables
    from app.config import Settings

    known = {f"PAPERBOY_{name.upper()}" for name in Settings.model_fields}
    assert variables <= known, variables - known


def test_dockerfile_uses_the_lock_and_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "-r requirements.lock" in dockerfile and "--no-deps" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "var" in ignored


def test_lock_pins_every_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, f"{name} is not in requirements.lock"
