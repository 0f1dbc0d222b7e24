"""Content provenance checks: what an uploaded image says of where it came from.

Two readings of one file, on a decoding thread within the process's pixel budget (as
uploads to edit are decoded): its C2PA manifest, read and validated by c2pa-python
(against the configured trust anchors, never fetching a remote manifest), and this
server's watermark in its pixels.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any, Literal

import c2pa
import numpy as np

from diffuserve.protocol.provenance import C2paResult, ContentProvenanceCheck, WatermarkResult
from diffuserve.protocol.uploads import ProbedImage, decode_probed
from diffuserve.service import watermark
from diffuserve.service.provenance import GENERATIVE_SOURCES, MIME_TYPES
from diffuserve.service.uploads import UploadDecoder

#: c2pa's validation states, in a check's words.
VALIDATION_STATES: dict[str, Literal["trusted", "valid", "invalid"]] = {
    "Trusted": "trusted", "Valid": "valid", "Invalid": "invalid"}


def reading_settings(trust_anchors: bytes | None) -> dict[str, Any]:
    """c2pa's settings for reading: no remote manifest fetched (a check must not make
    the server fetch a URL an upload names); the trust anchors, if any."""
    settings: dict[str, Any] = {"verify": {"remote_manifest_fetch": False}}
    if trust_anchors:
        settings["trust"] = {"trust_anchors": trust_anchors.decode()}
    return settings


def read_manifest(data: bytes, image_format: str, settings: dict[str, Any]) -> C2paResult:
    """The C2PA result of one file: its active manifest validated, and the generative
    action it records (its software agent as the model, its time)."""
    context = c2pa.Context.from_dict(settings)
    try:
        try:
            reader = c2pa.Reader.try_create(MIME_TYPES[image_format], io.BytesIO(data),
                                            None, context)
        except c2pa.C2paError:
            # A manifest is there but cannot be read (or fails validation outright).
            return C2paResult(outcome="not_detected", validation_state="invalid")
        if reader is None:
            return C2paResult(outcome="not_detected", validation_state="not_present")
        try:
            store = json.loads(reader.json())
            state = VALIDATION_STATES.get(str(reader.get_validation_state()), "invalid")
        finally:
            reader.close()
    finally:
        context.close()
    if state == "invalid":
        # As OpenAI's: evidence of tampering is not a detected signal; nothing it says
        # is reported.
        return C2paResult(outcome="not_detected", validation_state="invalid")
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    agent, when = _generative_action(manifest)
    signature = manifest.get("signature_info") or {}
    issuer = signature.get("issuer") or signature.get("common_name")
    return C2paResult(outcome="detected", validation_state=state,
                      issuer=str(issuer) if issuer else None, model=agent,
                      generated_at=when)


def _generative_action(manifest: dict[str, Any]) -> tuple[str | None, str | None]:
    """The software agent and time of the manifest's first action whose digital source
    type says a model made the image."""
    for assertion in manifest.get("assertions", []):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions", []):
            if action.get("digitalSourceType") not in GENERATIVE_SOURCES:
                continue
            agent = action.get("softwareAgent")
            name = agent.get("name") if isinstance(agent, dict) else agent
            when = action.get("when")
            return (str(name) if name else None), (str(when) if when else None)
    return None, None


class ProvenanceChecker:
    """Answers ``POST /v1/content_provenance_checks``; one per server."""

    def __init__(self, decoder: UploadDecoder, *, payload: np.ndarray | None,
                 trust_anchors: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.decoder = decoder
        #: This server's watermark (None: it has no signing identity, so never marked).
        self.payload = payload
        self.settings = reading_settings(trust_anchors)
        self.clock = clock

    async def check(self, probed: ProbedImage) -> ContentProvenanceCheck:
        """The results for an uploaded image whose header was checked."""
        created = int(self.clock())
        manifest, marked = await self.decoder.decode(probed.pixels,
                                                     lambda: self._read(probed))
        return ContentProvenanceCheck(created_at=created, results=[
            manifest, WatermarkResult(outcome="detected" if marked else "not_detected")])

    def _read(self, probed: ProbedImage) -> tuple[C2paResult, bool]:
        manifest = read_manifest(probed.upload.data, probed.format, self.settings)
        if self.payload is None:
            return manifest, False
        image = decode_probed(probed).image
        return manifest, watermark.read(image, self.payload).detected
