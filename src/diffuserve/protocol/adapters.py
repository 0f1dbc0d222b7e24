"""``lora``: the LoRA adapters a request asks for (a diffuserve extension, sent with the
SDKs' ``extra_body``), on generations, edits and variations.

One object or a list of them, ``{"name": "pixel", "scale": 0.8}`` (``scale`` optional:
the adapter's default). The protocol checks the shape, the names' spelling and the
scales; whether the model has such an adapter is the service's to say (a folder of
adapters changes while the server runs).

In a multipart form (edits, variations) the SDKs spell one object ``lora[name]``,
``lora[scale]`` and a list ``lora[][name]``, ``lora[][scale]`` (each key's values in
order); the field may also be the JSON text of the object or list.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffuserve.config.adapters import (
    ADAPTER_NAME_PATTERN,
    MAX_ADAPTER_SCALE,
    MAX_ADAPTERS_PER_REQUEST,
    MIN_ADAPTER_SCALE,
)
from diffuserve.protocol.errors import InvalidRequestError

_NAME = re.compile(ADAPTER_NAME_PATTERN)
#: How a request's adapter looks, for the messages that refuse another shape.
LORA_SHAPE = '{"name": "pixel", "scale": 0.8} or a list of them'


@dataclass(frozen=True)
class LoraRequest:
    """One adapter a request names, and the scale it asks for (None: the default)."""

    name: str
    scale: float | None = None


def parse_lora(value: Any, param: str = "lora") -> tuple[LoraRequest, ...]:
    """The adapters of a JSON value (an object or a list of objects; null: none)."""
    if value is None:
        return ()
    entries = value if isinstance(value, list) else [value]
    if not isinstance(value, (list, dict)):
        raise InvalidRequestError(f"Invalid type for '{param}': expected {LORA_SHAPE}.",
                                  param=param, code="invalid_type")
    if len(entries) > MAX_ADAPTERS_PER_REQUEST:
        raise InvalidRequestError(
            f"Invalid '{param}': at most {MAX_ADAPTERS_PER_REQUEST} adapters, but got "
            f"{len(entries)}.", param=param, code="array_above_max_length")
    found: list[LoraRequest] = []
    for index, entry in enumerate(entries):
        where = f"{param}[{index}]" if isinstance(value, list) else param
        found.append(_entry(entry, where))
    names = [adapter.name for adapter in found]
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise InvalidRequestError(f"Invalid '{param}': the adapter {repeated!r} is named "
                                  "more than once.", param=param, code="invalid_value")
    return tuple(found)


def _entry(entry: Any, where: str) -> LoraRequest:
    if not isinstance(entry, dict):
        raise InvalidRequestError(f"Invalid type for '{where}': expected an object like "
                                  '{"name": "pixel", "scale": 0.8}.', param=where,
                                  code="invalid_type")
    unknown = sorted(set(entry) - {"name", "scale"})
    if unknown:
        raise InvalidRequestError(f"Unknown parameter: '{where}.{unknown[0]}'.",
                                  param=f"{where}.{unknown[0]}", code="unknown_parameter")
    name = entry.get("name")
    if name is None:
        raise InvalidRequestError(f"Missing required parameter: '{where}.name'.",
                                  param=f"{where}.name", code="missing_required_parameter")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidRequestError(
            f"Invalid '{where}.name': an adapter's name (letters, digits, '.', '_' and '-', "
            "at most 64), never a path or a URL.", param=f"{where}.name",
            code="invalid_value")
    scale = entry.get("scale")
    if scale is None:
        return LoraRequest(name)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise InvalidRequestError(f"Invalid type for '{where}.scale': expected a number.",
                                  param=f"{where}.scale", code="invalid_type")
    if not math.isfinite(scale) or not MIN_ADAPTER_SCALE <= scale <= MAX_ADAPTER_SCALE:
        raise InvalidRequestError(
            f"Invalid '{where}.scale': expected a number from {MIN_ADAPTER_SCALE:g} to "
            f"{MAX_ADAPTER_SCALE:g}, but got {scale} instead.", param=f"{where}.scale",
            code="invalid_value")
    return LoraRequest(name, float(scale))


def lora_from_form(fields: Mapping[str, Sequence[str]]) -> Any:
    """The JSON value a form's ``lora`` parts spell (see the module's docstring), or
    None when there are none; ``fields``: every ``lora…`` part's values, in order."""
    if not fields:
        return None
    if set(fields) == {"lora"}:
        (text,) = _one("lora", fields["lora"])
        try:
            return json.loads(text)
        except ValueError:
            raise InvalidRequestError(
                f"Invalid 'lora': expected {LORA_SHAPE}, as JSON text or as lora[name] and "
                "lora[scale] parts.", param="lora", code="invalid_type") from None
    if set(fields) <= {"lora[name]", "lora[scale]"}:
        single = {key[5:-1]: _one(key, values)[0] for key, values in fields.items()}
        return {**single, **({"scale": _number("lora[scale]", single["scale"])}
                             if "scale" in single else {})}
    if set(fields) <= {"lora[][name]", "lora[][scale]"}:
        names = list(fields.get("lora[][name]", ()))
        scales = list(fields.get("lora[][scale]", ()))
        if scales and len(scales) != len(names):
            # The SDKs send each key's values together: which scale is whose is known only
            # when every adapter has one (or none has).
            raise InvalidRequestError(
                "Invalid 'lora': in a form, give every adapter a scale or none of them "
                "(or send lora as JSON text).", param="lora", code="invalid_value")
        return [{"name": name, **({"scale": _number(f"lora[{index}].scale", scales[index])}
                                  if scales else {})} for index, name in enumerate(names)]
    odd = sorted(set(fields) - {"lora", "lora[name]", "lora[scale]", "lora[][name]",
                                "lora[][scale]"})
    mixed = odd[0] if odd else "lora"
    raise InvalidRequestError(
        f"Invalid '{mixed}': send lora as JSON text, as lora[name] and lora[scale], or as "
        "lora[][name] and lora[][scale] parts (one way per request).", param="lora",
        code="invalid_value")


def _one(key: str, values: Sequence[str]) -> Sequence[str]:
    if len(values) != 1:
        raise InvalidRequestError(f"Invalid '{key}': expected one value, but got "
                                  f"{len(values)}.", param="lora", code="invalid_type")
    return values


def _number(param: str, text: str) -> float | str:
    """A form's text as a number, when it is one (else as sent: refused as a type)."""
    try:
        return float(text)
    except ValueError:
        return text
