"""ImageService: a planned request becomes an engine task, then OpenAI's response.

plan (pure, :mod:`~diffuserve.service.planning`) → task → engine client → images →
output (PNG, base64 or stored and linked) → response. Nothing here imports FastAPI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from diffuserve.engine.client import EngineClient
from diffuserve.engine.types import Task
from diffuserve.protocol.common import ImagesResponse
from diffuserve.protocol.generations import ImageGenerationRequest
from diffuserve.service.catalog import ModelCatalog
from diffuserve.service.output import OutputWriter
from diffuserve.service.planning import GenerationPlan, plan_generation
from diffuserve.service.usage import usage_for
from diffuserve.storage.base import ImageStore

logger = logging.getLogger("diffuserve.generation")


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
    ) -> None:
        self.catalog = catalog
        self.engine = engine
        self.output = OutputWriter(store)
        self.request_timeout = request_timeout
        self.clock = clock

    def plan(self, body: ImageGenerationRequest) -> GenerationPlan:
        """Validate and plan; raises only client errors, before anything is admitted."""
        return plan_generation(self.catalog, body)

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
        task = Task(model=plan.spec.name, params=plan.params, client=client_id,
                    request_id=request_id, deadline=self.clock() + self.request_timeout)
        result = await self.engine.run(task)
        request = plan.request
        options = request.options
        data = await self.output.items(
            result.images, response_format=request.response_format,
            revised_prompt=plan.revised_prompt, base_url=base_url, now=self.clock(),
            output_format=options.output_format, compression=options.output_compression)
        logger.info(
            "generation",
            extra={
                "fields": {
                    "request_id": request_id,
                    "model": request.model,
                    "served_by": plan.spec.name,
                    "user": request.end_user,
                    "n": plan.params.n,
                    "size": f"{plan.params.width}x{plan.params.height}",
                    "steps": plan.params.num_inference_steps,
                    "guidance_scale": plan.params.guidance_scale,
                    "seeds": list(plan.params.seeds),
                    "response_format": request.response_format,
                    "output_format": options.output_format,
                    "background": options.background,
                    "prompt_tokens": result.prompt_tokens,
                    "queue_seconds": round(result.queued_seconds, 3),
                    "generation_seconds": round(result.run_seconds, 3),
                }
            },
        )
        response = ImagesResponse(created=int(self.clock()), data=data)
        if request.gpt_image:
            width, height = plan.params.width, plan.params.height
            response.background = options.resolved_background
            response.output_format = options.output_format
            response.quality = plan.resolved_quality
            response.size = f"{width}x{height}"
            response.usage = usage_for(
                text_tokens=result.prompt_tokens, image_tokens_in=0, images_out=plan.images,
                width=width, height=height, quality=plan.resolved_quality)
        return response
