"""A subscriber setting's default and range are declared once (`app.models`): the table, the
rules, the API schemas and the forms all follow that declaration."""

from __future__ import annotations

from typing import Any, cast

import pytest
from sqlalchemy import Table

from app.models import (
    DEFAULT_TIMEZONE,
    DIGEST_SIZE,
    SEND_HOUR,
    TRENDING_WEIGHT,
    WEEKDAY,
    Bounded,
    Subscriber,
)
from app.subscribers.rules import Preferences, SubscriberError, validate_preferences
from app.web.schemas import SubscriberCreate, SubscriberUpdate

SETTINGS: dict[str, Bounded[Any]] = {
    "send_hour": SEND_HOUR,
    "digest_size": DIGEST_SIZE,
    "trending_weight": TRENDING_WEIGHT,
    "weekday": WEEKDAY,
}


def test_new_preferences_take_the_declared_defaults() -> None:
    preferences = Preferences(["moe"])
    assert preferences.timezone == DEFAULT_TIMEZONE
    for name, bounds in SETTINGS.items():
        assert getattr(preferences, name) == bounds.default


@pytest.mark.parametrize("name", list(SETTINGS))
def test_validation_accepts_the_range_and_names_it_when_refusing(name: str) -> None:
    bounds = SETTINGS[name]
    for value in (bounds.least, bounds.most):
        validate_preferences(Preferences(["moe"], **{name: value}))
    with pytest.raises(SubscriberError, match=f"between {bounds.least:g} and {bounds.most:g}"):
        validate_preferences(Preferences(["moe"], **{name: bounds.most + 1}))


def test_api_schemas_publish_the_declared_ranges() -> None:
    created = SubscriberCreate.model_json_schema()["properties"]
    updated = SubscriberUpdate.model_json_schema()["properties"]
    for name, bounds in SETTINGS.items():
        assert created[name]["default"] == bounds.default
        assert (created[name]["minimum"], created[name]["maximum"]) == (bounds.least, bounds.most)
        range_of_update = next(part for part in updated[name]["anyOf"] if "minimum" in part)
        assert (range_of_update["minimum"], range_of_update["maximum"]) == (
            bounds.least,
            bounds.most,
        )


def test_the_table_checks_the_declared_ranges() -> None:
    table = cast(Table, Subscriber.__table__)
    checks = {
        str(constraint.sqltext)
        for constraint in table.constraints
        if hasattr(constraint, "sqltext")
    }
    for name, bounds in SETTINGS.items():
        assert f"{name} BETWEEN {bounds.least:g} AND {bounds.most:g}" in checks
        assert table.c[name].default.arg == bounds.default  # type: ignore[union-attr]
