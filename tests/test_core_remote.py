"""The reply parsers: every plausible shape of the API's answers (current, legacy, third-party guesses, garbage)
gives a value or None, never an exception."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from batchgen.core.remote import (
    error_kind,
    error_text,
    failure_class,
    parse_enqueue_reply,
    parse_event,
    parse_generation,
    parse_json,
)

ROW = {
    "generation_id": "g1", "model_name": "openai-sora-2-pro", "prompt": "ox", "media_type": "video",
    "status": "succeeded", "result_url": "https://hub/r.mp4", "error_message": None, "enqueued_at": 1775091431,
    "started_at": 1775091432, "completed_at": 1775091590, "target_namespace": None, "seconds": "4",
}  # fmt: skip


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (ROW, ("g1", "succeeded", "openai-sora-2-pro", "https://hub/r.mp4", None)),
        # legacy: `model`, not `model_name`; `id` where `generation_id` is missing
        ({"id": "g2", "model": "m", "status": "processing"}, ("g2", "processing", "m", None, None)),
        # an unknown status is kept as sent, not guessed
        ({"generation_id": "g3", "status": "running"}, ("g3", "running", None, None, None)),
        ({"generation_id": "g4", "status": "failed", "error_message": "Insufficient credits"},
         ("g4", "failed", None, None, "Insufficient credits")),
        # the SSE shape: `error` rather than `error_message`, `url` rather than result_url
        ({"generation_id": "g5", "status": "failed", "error": {"message": "boom"}}, ("g5", "failed", None, None, "boom")),
        ({"generation_id": "g6"}, ("g6", "unknown", None, None, None)),
    ],
)  # fmt: skip
def test_generation_rows_of_every_shape(row: dict[str, Any], expected: tuple[Any, ...]) -> None:
    parsed = parse_generation(row)
    assert parsed is not None
    assert (parsed.generation_id, parsed.status, parsed.model, parsed.result_url, parsed.error) == expected


@pytest.mark.parametrize("row", [None, [], "g1", {"status": "queued"}, {"generation_id": ""}, {"generation_id": 7}])
def test_a_row_without_a_usable_id_is_none(row: Any) -> None:
    assert parse_generation(row) is None


def test_row_times_are_aware_utc_and_other_keys_are_the_request_params() -> None:
    parsed = parse_generation(ROW)
    assert parsed is not None
    assert parsed.enqueued_at == datetime.fromtimestamp(1775091431, UTC)
    assert parsed.params == {"seconds": "4"}
    assert parse_generation({**ROW, "enqueued_at": "soon"}).enqueued_at is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        ({"generations": [{"generation_id": "a", "status": "queued"}, {"generation_id": "b"}]}, ["a", "b"]),
        ({"generations": []}, []),
        ({"generations": [{"generation_id": ""}, {"id": "x"}, "junk"]}, []),
        ({"generations": "a"}, []),
        ([{"generation_id": "a"}], []),
        (None, []),
    ],
)
def test_enqueue_replies(body: Any, ids: list[str]) -> None:
    assert parse_enqueue_reply(body) == ids


@pytest.mark.parametrize(
    ("event", "data", "expected"),
    [
        ("media_generation_completed", '{"generation_id":"g","status":"succeeded","url":"https://p"}', "succeeded"),
        ("media_generation_completed", '{"generation_id":"g","status":"failed","error":"x"}', "failed"),
        ("media_generation_completed", '{"generation_id":"g","status":"processing"}', None),  # not terminal
        ("deployment_status_changed", "{}", None),  # other event types on the user's stream
        ("media_generation_completed", '{"generation_id":"g","stat', None),  # cut short
        ("media_generation_completed", "", None),
    ],
)
def test_completion_events(event: str, data: str, expected: str | None) -> None:
    parsed = parse_event(event, data)
    assert (parsed.status if parsed else None) == expected
    if parsed is not None and parsed.status == "succeeded":
        assert parsed.download_url == "https://p"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"error": "plain"}, "plain"),
        ({"error": {"type": "invalid_params", "title": "Invalid", "detail": "seconds must be 4"}}, "seconds must be 4"),
        ({"error": {"message": "Model not found: x"}}, "Model not found: x"),
        ({"error": {"title": "Unauthenticated"}}, "Unauthenticated"),
        ({"status": "error", "status_message": "unauthenticated"}, "unauthenticated"),
        ({"error_message": "Insufficient credits"}, "Insufficient credits"),
        ({}, None),
        ("<html>502</html>", "<html>502</html>"),
        (None, None),
    ],
)
def test_error_text_in_the_documented_order(body: Any, text: str | None) -> None:
    assert error_text(body) == text


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, None, "auth"),
        (400, {"status_message": "unauthenticated"}, "auth"),
        (429, None, "rate_limited"),
        (400, {"error": {"message": "Rate limit exceeded"}}, "rate_limited"),
        (402, None, "credits"),
        (403, {"error": {"type": "insufficient_credits", "detail": "Insufficient credits"}}, "credits"),
        (400, {"error": {"detail": "Insufficient credits"}}, "credits"),
        (502, "<html>", "server"),
        (404, {"error": {"type": "resource_not_found"}}, "not_found"),
        (400, {"error": {"detail": "num_generations must be an integer between 1 and 4"}}, "rejected"),
    ],
)
def test_error_kinds(status: int, body: Any, kind: str) -> None:
    assert error_kind(status, body) == kind


@pytest.mark.parametrize(
    ("error", "klass"),
    [
        ("Insufficient credits", "insufficient_credits"),
        ("Content moderation flagged the prompt", "moderation"),
        ("Getting model response error: 422 - Value error, seconds", "validation"),
        ("upstream timed out", "remote"),
    ],
)
def test_failure_classes(error: str, klass: str) -> None:
    assert failure_class(error) == klass


def test_json_that_is_not_json_is_none() -> None:
    assert parse_json('{"a": 1}') == {"a": 1}
    assert parse_json("<html>") is None and parse_json('{"a": ') is None
