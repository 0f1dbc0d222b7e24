"""Server-Sent Events for streamed image requests, in OpenAI's wire format."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from fastapi.sse import EventSourceResponse, format_sse_event

from diffuserve.api.errors import is_mapped, to_api_error
from diffuserve.service.images import StreamEvent

logger = logging.getLogger("diffuserve.api")


async def _encode(events: AsyncIterator[StreamEvent], request_id: str) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield format_sse_event(event=event.event, data_str=orjson.dumps(event.data).decode())
    except Exception as exc:
        # The status line is long gone: the error becomes an event, which the SDK raises.
        if not is_mapped(exc):
            logger.error("stream failed", exc_info=exc,
                         extra={"fields": {"request_id": request_id}})
        error = to_api_error(exc)
        yield format_sse_event(event="error", data_str=orjson.dumps(error.envelope()).decode())
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def event_stream(events: AsyncIterator[StreamEvent], *, request_id: str,
                 headers: dict[str, str]) -> EventSourceResponse:
    """The response for ``events`` (already opened): one SSE event each; an error after
    the start is sent as an ``error`` event with OpenAI's envelope."""
    return EventSourceResponse(
        _encode(events, request_id),
        headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
