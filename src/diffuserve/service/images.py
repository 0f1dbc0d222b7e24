"""ImageService: a request becomes a plan, an engine task, then OpenAI's response.

One way through, whatever the route: ``plan(request)`` (client errors only, nothing
admitted yet; :mod:`~diffuserve.service.planning`) → for an edit of remote images,
``fetch(plan)`` once admitted → ``generate(plan)`` or ``open_stream(plan)`` (task →
engine client → images → output: PNG, base64 or stored and linked → response or
events). Nothing here imports FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from PIL import Image

from diffuserve.config import PNG_COMPRESS_LEVEL, ModelSpec
from diffuserve.engine.client import EngineClient
from diffuserve.engine.errors import (
    DeadlineExceeded,
    GenerationFailed,
    ResidencyRefused,
    UnsupportedTask,
)
from diffuserve.engine.types import (
    ModelDefaults,
    ModelStatus,
    Progress,
    Result,
    Task,
    TaskEvent,
    TaskKind,
)
from diffuserve.protocol.common import ImagesResponse
from diffuserve.protocol.edits import (
    EditRequest,
    ImageRequest,
    PendingEdit,
    PendingVariation,
    VariationBody,
    VariationRequest,
    check_edit,
    check_variation,
    decode_edit,
    decode_variation,
)
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.protocol.uploads import ProbedImage, Upload
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.editing import keep_unmasked
from diffuserve.service.moderation import Moderation
from diffuserve.service.output import OutputWriter
from diffuserve.service.planning import (
    GenerationPlan,
    Plan,
    RemoteEdit,
    check_edit_images,
    plan_edit,
    plan_generation,
    plan_variation,
)
from diffuserve.service.provenance import Marking, Provenance
from diffuserve.service.uploads import UploadDecoder
from diffuserve.service.usage import usage_for
from diffuserve.storage.base import ImageStore

logger = logging.getLogger("diffuserve.generation")


@dataclass(frozen=True)
class StreamEvent:
    """One Server-Sent Event of a streamed request: its ``event:`` name and JSON data."""

    event: str
    data: dict[str, Any]


class ImageFetcher(Protocol):
    """Fetches an edit's remote image URL as an upload, or raises a client error naming
    ``param``. The server's is :func:`~diffuserve.api.remote.fetch_image_url` (the api
    alone speaks HTTP)."""

    async def __call__(self, url: str, param: str, *, max_bytes: int) -> Upload: ...


class ImageService:
    """Turns Images API requests into images; one instance per server."""

    def __init__(
        self,
        catalog: ModelCatalog,
        engine: EngineClient,
        store: ImageStore,
        *,
        request_timeout: float = 540.0,
        clock: Callable[[], float] = time.time,
        moderation: Moderation | None = None,
        png_compress_level: int = PNG_COMPRESS_LEVEL,
        fetch_image: ImageFetcher | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        self.catalog = catalog
        self.moderation = moderation or Moderation()
        self.engine = engine
        #: Marks every image served (watermark, signed manifest); None: none is marked.
        self.provenance = provenance
        self.output = OutputWriter(store, png_compress_level=png_compress_level,
                                   provenance=provenance)
        self.uploads = UploadDecoder()
        self.request_timeout = request_timeout
        self.clock = clock
        self.fetch_image = fetch_image

    async def plan(self, request: ImageRequest) -> Plan:
        """What will be drawn for ``request``, before anything is admitted; raises only
        client errors (and the engine's refusal of a task its loaded model cannot do).

        The requested name is resolved here (an omitted ``model`` is the catalog's
        default) and its rules applied. An edit or a variation is first checked against
        what the engine says its model takes, then its uploads are decoded off the event
        loop; an edit of remote images is planned as far as it can be (a
        :class:`RemoteEdit`), to :meth:`fetch` once admitted."""
        name = self.catalog.requested_name(request.model)
        if isinstance(request, ImageGenerationRequest):
            return plan_generation(self.catalog, request,
                                   await self._own_defaults(self.catalog.resolve(name)))
        if isinstance(request, VariationBody):
            pending_variation = check_variation(request, name)
            variation = await self._decode_variation(pending_variation)
            return replace(plan_variation(self.catalog, variation, await self._own_defaults(
                self.catalog.resolve_edit(name))), inputs=(pending_variation.image,))
        pending = check_edit(request, name)
        if pending.remote:
            # Fetched only once valid and admitted, and no more of them than the images
            # the served model may take.
            await self._check_edit(pending)
            return RemoteEdit(pending)
        return await self._planned_edit(pending)

    async def fetch(self, plan: RemoteEdit) -> GenerationPlan:
        """The admitted edit's remote images fetched, checked as uploads are, decoded,
        and the edit planned."""
        if self.fetch_image is None:
            raise RuntimeError("an edit of remote images, but no fetcher to fetch them")
        pending = plan.pending
        fetched = {image.url: await self.fetch_image(image.url, image.param,
                                                     max_bytes=pending.uploads.max_bytes)
                   for image in pending.remote}
        return await self._planned_edit(pending.with_fetched(fetched))

    async def _planned_edit(self, pending: PendingEdit) -> GenerationPlan:
        """The edit's uploads decoded, and the edit planned (its images as sent kept for
        its content credentials)."""
        edit = await self._decode_edit(pending)
        plan = plan_edit(self.catalog, edit, await self._own_defaults(
            self.catalog.resolve_edit(edit.request.model)))
        return replace(plan, inputs=tuple(source for source in pending.images
                                          if isinstance(source, ProbedImage)))

    async def _own_defaults(self, spec: ModelSpec) -> ModelDefaults | None:
        """The steps and guidance the model reports as its own, asked of the engine only
        where the models file leaves either unset (None: it has none, or is still
        loading at start: the engine then refuses the task at submit). A model that has
        never been loaded knows them only once loaded: it is loaded first (within the
        request's deadline), as the request would load it anyway."""
        if spec.steps is not None and spec.guidance_scale is not None:
            return None
        served = await self.engine.model(spec.engine_name)
        if served is not None and not served.loaded and served.defaults is None:
            served = await self._loaded_first(spec.engine_name, served)
        return served.defaults if served is not None else None

    async def _loaded_first(self, model: str, served: ModelStatus) -> ModelStatus:
        try:
            return await asyncio.wait_for(self.engine.load_model(model),
                                          self.request_timeout)
        except ResidencyRefused:  # an engine that loads its models itself
            return served
        except TimeoutError:
            raise DeadlineExceeded(started=False, timeout_seconds=self.request_timeout,
                                   retry_after=5) from None

    async def _check_edit(self, pending: PendingEdit) -> None:
        """What the model that draws the edit takes (the task, how many images), as the
        engine reports it, checked before an upload is fetched or decoded."""
        spec = self.catalog.resolve_edit(pending.request.model)
        served = await self._served(spec.engine_name, TaskKind.EDIT)
        check_edit_images(self.catalog, pending.request, len(pending.images),
                          served.max_input_images if served is not None else None)

    async def _decode_edit(self, pending: PendingEdit) -> EditRequest:
        """The edit's uploads decoded off the event loop, within the decoding budget."""
        await self._check_edit(pending)
        return await self.uploads.decode(
            pending.pixels, lambda: decode_edit(pending),
            lambda edit: (*edit.images, *([edit.mask] if edit.mask is not None else [])))

    async def _decode_variation(self, pending: PendingVariation) -> VariationRequest:
        spec = self.catalog.resolve_edit(pending.request.model)
        await self._served(spec.engine_name, TaskKind.VARIATION)
        return await self.uploads.decode(pending.pixels, lambda: decode_variation(pending),
                                         lambda variation: (variation.image,))

    async def _served(self, model: str, kind: TaskKind) -> ModelStatus | None:
        """The engine's word on ``model`` (None: it has none), refusing a task the loaded
        model cannot do as the engine would at submit, only before any decoding."""
        served = await self.engine.model(model)
        if served is not None and served.loaded and served.tasks \
                and kind.value not in served.tasks:
            raise UnsupportedTask(model, f"{kind} tasks")
        return served

    async def _finished(self, plan: GenerationPlan, images: tuple[Image.Image, ...]
                        ) -> tuple[Image.Image, ...]:
        """The engine's images with the server's watermark, then an edit's unmasked
        pixels put back (so the watermark is where the model drew, and what the mask
        kept is the input's own, to the bit)."""
        params = plan.params
        provenance = self.provenance
        marks = provenance is not None and provenance.watermarks
        image, mask = params.image, params.mask
        masked = plan.kind == TaskKind.EDIT and image is not None and mask is not None
        if not marks and not masked:
            return images

        def finish() -> list[Image.Image]:
            finished = provenance.watermark(images) if marks and provenance else list(images)
            if masked and image is not None and mask is not None:
                return keep_unmasked(finished, image, mask)
            return finished

        return tuple(await asyncio.to_thread(finish))

    def _marking(self, plan: GenerationPlan) -> Marking | None:
        """What the manifests of the plan's images say (None: images are not marked)."""
        if self.provenance is None:
            return None
        return Marking(model=plan.spec.name, when=self.clock(),
                       edited=plan.kind != TaskKind.GENERATE, inputs=plan.inputs)

    async def moderate(self, plan: Plan, request_id: str = "") -> None:
        """The content policy's verdict on the prompt, before anything is admitted."""
        await self.moderation.check(plan.prompt, plan.request.options.moderation, request_id)

    def _task(self, plan: GenerationPlan, request_id: str, client_id: str,
              previews: int = 0) -> Task:
        return Task(model=plan.spec.engine_name, params=plan.params, kind=plan.kind,
                    client=client_id, request_id=request_id,
                    deadline=self.clock() + self.request_timeout,
                    progress=previews > 0 or plan.request.options.stream, previews=previews)

    async def open_stream(
        self,
        plan: GenerationPlan,
        *,
        request_id: str = "",
        client_id: str = "anonymous",
    ) -> AsyncIterator[StreamEvent]:
        """Submit ``plan`` for a streamed answer; returns once the engine accepted the
        work (its refusal, a full queue or a draining server, raises here, before any
        answer is sent) with the events to send (see :meth:`_events`). Cancelling the
        call, or closing the events, cancels the task."""
        task = self._task(plan, request_id, client_id,
                          previews=plan.request.options.partial_images)
        events = self.engine.stream(task)
        try:
            # Accepted; from an engine that does not send it, the first progress or result.
            first = await anext(events, None)
        except BaseException:
            await events.aclose()  # type: ignore[attr-defined]
            raise
        if first is None:
            raise GenerationFailed(task.model, "the engine ended the task without a result")
        return self._events(plan, request_id, events, first)

    async def _events(self, plan: GenerationPlan, request_id: str,
                      events: AsyncIterator[TaskEvent], first: TaskEvent
                      ) -> AsyncIterator[StreamEvent]:
        """OpenAI's streamed answer: ``<kind>.partial_image`` events (previews of the
        first image while it is drawn), then one ``<kind>.completed`` event per image.

        Events echo the options as requested (``auto`` kept), as OpenAI's do; each
        completed event carries that image's usage (the prompt's tokens on the first).
        """
        request, options = plan.request, plan.request.options
        kind = "image_edit" if plan.kind == TaskKind.EDIT else "image_generation"
        echo = {"background": options.background, "output_format": options.output_format,
                "quality": request.quality, "size": str(request.size)}
        # Completed events carry the effective safety identifier, as OpenAI's do.
        identified = {} if request.end_user is None else {
            "safety_identifier": request.end_user}
        event: TaskEvent | None = first
        marking = self._marking(plan)
        try:
            while event is not None:
                if isinstance(event, Progress) and event.preview is not None:
                    # A preview carries the manifest, not the watermark: it is not the
                    # image the request was for, and is soon replaced by it.
                    (b64,) = await self.output.encoded([event.preview], options.output_format,
                                                       options.output_compression, marking)
                    yield StreamEvent(f"{kind}.partial_image", {
                        "type": f"{kind}.partial_image", "b64_json": b64,
                        "partial_image_index": event.preview_index,
                        "created_at": int(self.clock()), **echo})
                elif isinstance(event, Result):
                    encoded = await self.output.encoded(
                        await self._finished(plan, event.images), options.output_format,
                        options.output_compression, marking)
                    for index, b64 in enumerate(encoded):
                        usage = usage_for(
                            text_tokens=event.prompt_tokens if index == 0 else 0,
                            image_tokens_in=plan.input_image_tokens if index == 0 else 0,
                            images_out=1, width=plan.params.width,
                            height=plan.params.height, quality=plan.resolved_quality)
                        yield StreamEvent(f"{kind}.completed", {
                            "type": f"{kind}.completed", "b64_json": b64,
                            "created_at": int(self.clock()), **echo,
                            "usage": usage.model_dump(), **identified})
                    self._log(plan, request_id, event, streamed=True)
                event = await anext(events, None)
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def generate(
        self,
        plan: GenerationPlan,
        *,
        base_url: str,
        request_id: str = "",
        client_id: str = "anonymous",
    ) -> ImagesResponse:
        """Draw the plan (until done or its deadline; cancelling the caller cancels the
        task), then encode and store."""
        result = await self.engine.run(self._task(plan, request_id, client_id))
        request = plan.request
        options = request.options
        data = await self.output.items(
            await self._finished(plan, result.images), response_format=request.response_format,
            revised_prompt=plan.revised_prompt, base_url=base_url, now=self.clock(),
            output_format=options.output_format, compression=options.output_compression,
            marking=self._marking(plan))
        self._log(plan, request_id, result)
        response = ImagesResponse(created=int(self.clock()), data=data,
                                  safety_identifier=request.end_user)
        if request.gpt_image:
            width, height = plan.params.width, plan.params.height
            response.background = options.resolved_background
            response.output_format = options.output_format
            response.quality = plan.resolved_quality
            response.size = str(plan.size)
            response.usage = usage_for(
                text_tokens=result.prompt_tokens, image_tokens_in=plan.input_image_tokens,
                images_out=plan.images,
                width=width, height=height, quality=plan.resolved_quality)
        return response

    def _log(self, plan: GenerationPlan, request_id: str, result: Result,
             streamed: bool = False) -> None:
        request, options = plan.request, plan.request.options
        logger.info(
            "generation",
            extra={
                "fields": {
                    "request_id": request_id,
                    "model": request.model,
                    "served_by": plan.spec.name,
                    "user": request.end_user,
                    "n": plan.params.n,
                    "size": str(plan.size),
                    "steps": plan.params.num_inference_steps,
                    "guidance_scale": plan.params.guidance_scale,
                    "seeds": list(plan.params.seeds),
                    "response_format": request.response_format,
                    "output_format": options.output_format,
                    "background": options.background,
                    "streamed": streamed,
                    "prompt_tokens": result.prompt_tokens,
                    "queue_seconds": round(result.queued_seconds, 3),
                    "generation_seconds": round(result.run_seconds, 3),
                }
            },
        )
