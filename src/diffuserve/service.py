"""ImageService: a validated request becomes images, stored and encoded per OpenAI.

request → model and rules → revised prompt → GenerationParams → device worker →
PNG → URL or base64. Nothing here imports FastAPI.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from diffuserve.engine.registry import ModelRegistry, ServedModel
from diffuserve.engine.scheduler import Job, ModelScheduler, SchedulerPool
from diffuserve.engine.types import GenerationParams
from diffuserve.errors import (
    ClientClosedRequest,
    RateLimitError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from diffuserve.prompting import revise_prompt
from diffuserve.protocol import (
    MAX_SEED,
    ImageGenerationRequest,
    ImageObject,
    ImagesResponse,
    ValidatedRequest,
    rules_for,
)
from diffuserve.storage.base import ImageStore
from diffuserve.storage.signing import UrlSigner

logger = logging.getLogger("diffuserve.generation")

#: gpt-image quality levels as fractions of the model's standard step count.
_QUALITY_STEP_FACTORS = {"low": 0.5, "medium": 1.0, "auto": 1.0}


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


@dataclass(frozen=True)
class Plan:
    """What will be drawn for one request."""

    model: ServedModel
    request: ValidatedRequest
    params: GenerationParams
    revised_prompt: str | None


def plan_request(registry: ModelRegistry, body: ImageGenerationRequest) -> Plan:
    """Resolve, validate and fill in defaults; raises before any compute."""
    name = body.model if body.model is not None else registry.request_default()
    model = registry.resolve(name)
    req = rules_for(name).validate(body, name)
    spec = model.spec

    revised = (
        revise_prompt(req.prompt, req.style, styled=spec.prompt_revision == "styled")
        if req.revise_prompt else None
    )
    if req.num_inference_steps is not None:
        steps = req.num_inference_steps
    elif req.quality in ("hd", "high"):
        steps = spec.effective_hd_steps
    else:
        steps = max(1, round(spec.steps * _QUALITY_STEP_FACTORS.get(req.quality, 1.0)))
    guidance = (
        req.guidance_scale if req.guidance_scale is not None
        else spec.guidance_for_style(req.style)
    )
    first_seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED - req.n + 2)
    params = GenerationParams(
        prompt=revised if revised is not None else req.prompt,
        negative_prompt=req.negative_prompt or spec.negative_prompt,
        width=req.width,
        height=req.height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        seeds=tuple(first_seed + i for i in range(req.n)),
    )
    return Plan(model=model, request=req, params=params, revised_prompt=revised)


class ImageService:
    """Turns Images API requests into images; one instance per server."""

    def __init__(
        self,
        registry: ModelRegistry,
        schedulers: SchedulerPool,
        store: ImageStore,
        signer: UrlSigner,
        *,
        request_timeout: float = 540.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.schedulers = schedulers
        self.store = store
        self.signer = signer
        self.request_timeout = request_timeout
        self.clock = clock
        # PNG encoding is CPU work too: a bound keeps a burst of finished batches from
        # starving the device thread.
        self._encoders = asyncio.Semaphore(os.cpu_count() or 2)

    def plan(self, body: ImageGenerationRequest) -> Plan:
        return plan_request(self.registry, body)

    async def generate(
        self,
        body: ImageGenerationRequest,
        *,
        base_url: str,
        request_id: str = "",
        client_id: str = "anonymous",
        disconnected: asyncio.Future[None] | None = None,
    ) -> ImagesResponse:
        """Validate, queue, wait (until done, the deadline or the client leaves), encode."""
        plan = self.plan(body)
        backend = plan.model.backend
        if not backend.loaded:
            raise ServiceUnavailableError(
                "The model is still loading. Try again shortly.",
                headers={"Retry-After": "5"},
            )
        scheduler = self.schedulers.for_model(
            plan.model.name, backend, plan.model.spec.max_batch_size
        )
        admitted = time.monotonic()
        deadline = admitted + self.request_timeout
        job = scheduler.submit(plan.params, client_id, deadline, request_id)
        images = await self._wait(scheduler, job, deadline, disconnected)
        if disconnected is not None and disconnected.done():
            raise ClientClosedRequest("The client closed the connection.")
        waited = (job.started or admitted) - admitted
        generated = time.monotonic() - (job.started or admitted)
        async with self._encoders:
            pngs = await asyncio.to_thread(lambda: [encode_png(image) for image in images])

        data = []
        for png in pngs:
            item = ImageObject(revised_prompt=plan.revised_prompt)
            if plan.request.response_format == "b64_json":
                item.b64_json = base64.b64encode(png).decode("ascii")
            else:
                name = await asyncio.to_thread(self.store.put, png, ".png")
                item.url = self.signer.url(base_url, name, self.clock())
            data.append(item)

        logger.info(
            "generation",
            extra={
                "fields": {
                    "request_id": request_id,
                    "model": plan.request.model,
                    "served_by": plan.model.name,
                    "user": plan.request.user,
                    "n": plan.params.n,
                    "size": f"{plan.params.width}x{plan.params.height}",
                    "steps": plan.params.num_inference_steps,
                    "guidance_scale": plan.params.guidance_scale,
                    "seeds": list(plan.params.seeds),
                    "response_format": plan.request.response_format,
                    "queue_seconds": round(waited, 3),
                    "generation_seconds": round(generated, 3),
                }
            },
        )
        return ImagesResponse(created=int(self.clock()), data=data)

    async def _wait(
        self,
        scheduler: ModelScheduler,
        job: Job,
        deadline: float,
        disconnected: asyncio.Future[None] | None,
    ) -> list[Image.Image]:
        waiters: set[asyncio.Future[Any]] = {job.future}
        if disconnected is not None:
            waiters.add(disconnected)
        try:
            done, _ = await asyncio.wait(
                waiters, timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:
            scheduler.abandon(job)
            raise
        if job.future in done:
            return job.future.result()
        started = job.started
        scheduler.abandon(job)
        if disconnected is not None and disconnected in done:
            raise ClientClosedRequest("The client closed the connection.")
        if started is None:
            retry = scheduler.retry_after()
            raise RateLimitError(
                f"The request waited {self.request_timeout:g}s without its turn coming: the "
                f"server is overloaded. Please try again in {retry}s.",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(retry)},
            )
        raise RequestTimeoutError(
            f"The images were not finished within the server's deadline of "
            f"{self.request_timeout:g}s. Ask for fewer or smaller images or fewer steps.",
            code="timeout",
            # The same work would take as long again: tell the SDK not to resend it.
            headers={"x-should-retry": "false"},
        )
