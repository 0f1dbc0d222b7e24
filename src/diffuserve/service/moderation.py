"""The content-policy hook behind ``moderation``: off unless an operator plugs one in.

A policy is any callable registered under the ``diffuserve.content_policy`` entry-point
group and named by ``--content-policy``::

    [project.entry-points."diffuserve.content_policy"]
    my-policy = "my_package.policy:check"

It is called with the prompt and the request's ``moderation`` level (``auto`` or
``low``) before the request is admitted, off the event loop, and returns ``None`` to let
the request through or a reason to refuse it, which the client sees as OpenAI's
``content_policy_violation``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from diffuserve.protocol.errors import InvalidRequestError

logger = logging.getLogger("diffuserve.moderation")

ENTRY_POINT_GROUP = "diffuserve.content_policy"
#: ``(prompt, level) -> None`` to allow, or the reason to refuse.
ContentPolicy = Callable[[str, str], str | None]

REFUSAL_MESSAGE = (
    "Your request was rejected as a result of our safety system. "
    "Your prompt may contain text that is not allowed by our safety system."
)


def load_policy(name: str) -> ContentPolicy:
    """The policy registered as ``name``; a readable error when there is none."""
    for point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        policy: ContentPolicy = point.load()
        return policy
    known = ", ".join(sorted(point.name for point in entry_points(group=ENTRY_POINT_GROUP)))
    raise ValueError(f"no content policy named {name!r} is installed "
                     f"(installed: {known or 'none'})")


class Moderation:
    """Runs the plugged-in policy, if any, on each prompt."""

    def __init__(self, policy: ContentPolicy | None = None) -> None:
        self.policy = policy

    async def check(self, prompt: str, level: str, request_id: str = "") -> None:
        if self.policy is None:
            return
        reason = await asyncio.to_thread(self.policy, prompt, level)
        if reason is not None:
            logger.info("refused by the content policy",
                        extra={"fields": {"request_id": request_id, "reason": reason,
                                          "moderation": level}})
            raise InvalidRequestError(REFUSAL_MESSAGE, code="content_policy_violation")
