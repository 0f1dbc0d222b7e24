"""What every image route does with its request: read, plan, moderate, admit, draw or
stream, answer — and count it, whatever happens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from fastapi import Request
from fastapi.responses import Response

from diffuserve.api.admission import RequestRecord
from diffuserve.api.auth import Client
from diffuserve.api.deps import parts, request_id
from diffuserve.api.disconnect import unless_client_leaves
from diffuserve.api.errors import is_mapped, to_api_error
from diffuserve.api.sse import event_stream
from diffuserve.protocol.edits import ImageRequest
from diffuserve.service.planning import RemoteEdit

#: Reads the route's body as a typed request (protocol; raising only client errors).
BodyReader = Callable[[Request], Awaitable[ImageRequest]]


async def answer(request: Request, client: Client, read: BodyReader) -> Response:
    """Validate, then admit, then draw: the one flow of the image routes."""
    server = parts(request)
    service = server.service
    record = RequestRecord()
    limit_headers: dict[str, str] = {}
    try:
        body = await read(request)
        record.model = service.catalog.served_name(body.model)
        planned = await service.plan(body)
        rid = request_id(request)
        await service.moderate(planned, rid)
        limit_headers = await server.admission.admit(client, images=planned.images,
                                                     user=planned.request.end_user)
        if isinstance(planned, RemoteEdit):
            plan = await unless_client_leaves(request, service.fetch(planned))
        else:
            plan = planned
        if plan.request.options.stream:
            # Opened once the engine accepted the work: a refusal still gets its status.
            events = await unless_client_leaves(request, service.open_stream(
                plan, request_id=rid, client_id=client.id))
            record.status = 200
            return event_stream(events, request_id=rid, headers=limit_headers)
        result = await unless_client_leaves(request, service.generate(
            plan, base_url=server.base_url(request), request_id=rid, client_id=client.id))
        record.status = 200
        # orjson writes megabytes of base64 at memory speed (pydantic-core's JSON takes
        # a millisecond per 512² image, scanning the string for escapes).
        return Response(orjson.dumps(result.model_dump(mode="json", exclude_none=True)),
                        headers=limit_headers, media_type="application/json")
    except Exception as exc:
        error = to_api_error(exc)
        record.status = error.status_code
        if not is_mapped(exc):
            raise  # a bug: the catch-all handler logs it with its traceback
        error.headers = {**limit_headers, **error.headers}
        try:
            raise error from exc
        finally:
            # The raised error's traceback holds this frame: a local naming it would
            # make a cycle that keeps the request's decoded images alive until the
            # garbage collector runs.
            del error
    finally:
        server.admission.finish(record)
