"""What every image route does with its request: plan, moderate, admit, draw or stream,
answer — and count it, whatever happens."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from fastapi import Request
from fastapi.responses import Response

from diffuserve.api.admission import RequestRecord
from diffuserve.api.auth import Client
from diffuserve.api.deps import ServerParts, parts, request_id
from diffuserve.api.disconnect import unless_client_leaves
from diffuserve.api.errors import is_mapped, to_api_error
from diffuserve.api.sse import event_stream
from diffuserve.protocol.rules import ValidatedRequest
from diffuserve.service.planning import GenerationPlan


@dataclass(frozen=True)
class AdmitFirst:
    """A request valid as far as it can be known before work that costs the server
    something outside it (fetching remote images): admitted first, then ``plan()``."""

    request: ValidatedRequest
    plan: Callable[[], Awaitable[GenerationPlan]]


#: Reads and plans the request (raising only client errors); gets the model label of the
#: metrics as soon as the requested name is known.
Planner = Callable[[ServerParts, Callable[[str | None], None]],
                   Awaitable[GenerationPlan | AdmitFirst]]


async def answer(request: Request, client: Client, planner: Planner) -> Response:
    """Validate, then admit, then draw: the one flow of the image routes."""
    server = parts(request)
    record = RequestRecord()
    limit_headers: dict[str, str] = {}

    def label(model: str | None) -> None:
        record.model = server.service.catalog.served_name(model)

    try:
        planned = await planner(server, label)
        rid = request_id(request)
        if isinstance(planned, AdmitFirst):
            await server.service.moderate_request(planned.request, rid)
            limit_headers = await server.admission.admit(client, images=planned.request.n,
                                                         user=planned.request.end_user)
            plan = await unless_client_leaves(request, planned.plan())
        else:
            plan = planned
            await server.service.moderate(plan, rid)
            limit_headers = await server.admission.admit(client, images=plan.images,
                                                         user=plan.request.end_user)
        if plan.request.options.stream:
            events = server.service.stream(plan, request_id=rid, client_id=client.id)
            # Until the engine accepts the work, a refusal still gets its own status.
            await unless_client_leaves(request, events.__anext__())
            record.status = 200
            return event_stream(events, request_id=rid, headers=limit_headers)
        result = await unless_client_leaves(request, server.service.generate(
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
