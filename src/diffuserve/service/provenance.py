"""Content provenance of the images served: a C2PA manifest signed into each file and an
invisible watermark in the pixels of each finished image.

The manifest says what made the image, in C2PA's and IPTC's words: a ``c2pa.actions``
assertion with ``c2pa.created`` (a generation, digital source type
``trainedAlgorithmicMedia``) or ``c2pa.edited`` (an edit or a variation,
``compositeWithTrainedAlgorithmicMedia``, its input images as ingredients: the first the
parent), the model that drew it as the action's software agent, the time as its
``when``, and diffuserve and its version as the claim generator. It is signed by
c2pa-python (the Content Authenticity Initiative's c2pa-rs) after the image is encoded:
its hash covers the file's final bytes. No thumbnail is embedded (c2pa's default): it
cost 50 ms and hundreds of kilobytes per image for a copy of what the file shows.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import c2pa
import numpy as np
from PIL import Image

from diffuserve import __version__
from diffuserve.protocol.uploads import ProbedImage
from diffuserve.service import watermark
from diffuserve.service.credentials import SigningIdentity

#: IPTC's digital source types (https://cv.iptc.org/newscodes/digitalsourcetype/).
GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
EDITED = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
#: The digital source types that say a model made the image.
GENERATIVE_SOURCES = frozenset({GENERATED, EDITED})
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
#: c2pa's settings for signing: no thumbnail in the manifest.
SIGNING_SETTINGS: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}}}


@dataclass(frozen=True)
class Marking:
    """What one request's manifests say: made (or edited from ``inputs``) by ``model`` at
    ``when`` (Unix time)."""

    model: str
    when: float
    edited: bool = False
    #: An edit's or a variation's uploaded images, as sent (the first is the parent).
    inputs: tuple[ProbedImage, ...] = ()


def rfc3339(when: float) -> str:
    """``when`` as UTC RFC 3339 to the second (``2026-01-02T03:04:05Z``)."""
    moment = datetime.datetime.fromtimestamp(int(when), datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def manifest_for(marking: Marking, output_format: str) -> dict[str, Any]:
    """The manifest definition of one image (c2pa's JSON)."""
    edited = marking.edited and bool(marking.inputs)
    action = {
        "action": "c2pa.edited" if edited else "c2pa.created",
        "digitalSourceType": EDITED if marking.edited else GENERATED,
        "softwareAgent": {"name": marking.model},
        "when": rfc3339(marking.when),
    }
    return {
        "claim_generator_info": [{"name": "diffuserve", "version": __version__}],
        "title": f"image.{output_format}",
        "format": MIME_TYPES[output_format],
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }


class Provenance:
    """Marks images: the watermark into finished pixels, the signed manifest into encoded
    files. Stateless between calls; one per server, used from worker threads."""

    def __init__(self, identity: SigningIdentity, *, watermarks: bool = True) -> None:
        self.identity = identity
        self.watermarks = watermarks
        self.payload = watermark.payload_for(identity.public_key)
        self._signer_info = c2pa.C2paSignerInfo(identity.algorithm.encode(),
                                                identity.chain_pem, identity.key_pem, None)
        # Signed once now: a chain c2pa will not sign with fails the start, not a request.
        self.sign(_probe_png(), "png", Marking(model="start-up check", when=0.0))

    def watermark(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The images with the server's watermark (as they are if watermarks are off, or
        where an image is too small to carry it)."""
        if not self.watermarks:
            return list(images)
        return [watermark.embed(image, self.payload) for image in images]

    def sign(self, data: bytes, output_format: str, marking: Marking) -> bytes:
        """``data`` (an encoded ``output_format`` image) with its signed manifest."""
        mime = MIME_TYPES[output_format]
        # A signer, a context and a builder per image: c2pa's objects serialise callers
        # of one object, and each costs well under a millisecond to make.
        signer = c2pa.Signer.from_info(self._signer_info)
        context = c2pa.Context.from_dict(SIGNING_SETTINGS)
        builder = c2pa.Builder(manifest_for(marking, output_format), context=context)
        try:
            if marking.edited and marking.inputs:
                builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
                for index, image in enumerate(marking.inputs):
                    builder.add_ingredient(
                        {"title": f"input-{index + 1}.{image.format}",
                         "relationship": "parentOf" if index == 0 else "componentOf"},
                        MIME_TYPES[image.format], io.BytesIO(image.upload.data))
            signed = io.BytesIO()
            builder.sign(signer, mime, io.BytesIO(data), signed)
            return signed.getvalue()
        finally:
            builder.close()
            context.close()
            signer.close()


def _probe_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
