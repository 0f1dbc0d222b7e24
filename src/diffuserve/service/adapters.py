"""Which LoRA adapters a request draws with: the model's own (a derived model's
``lora``), then the request's on top, each at its asked or default scale."""

from __future__ import annotations

from dataclasses import dataclass

from diffuserve.config import ModelSpec
from diffuserve.config.adapters import MAX_ADAPTERS_PER_REQUEST
from diffuserve.engine.adapters import AdapterLibrary, Choice, canonical
from diffuserve.protocol.adapters import LoraRequest
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.service.catalog import ModelCatalog

#: How many of a model's adapter names a refusal lists.
LISTED_NAMES = 20


def chosen_adapters(spec: ModelSpec, library: AdapterLibrary,
                    requested: tuple[LoraRequest, ...]) -> tuple[Choice, ...]:
    """The adapters and scales ``spec`` draws a request with (canonical: equal sets
    batch together). A name the model has no adapter for is a 400 naming it and the
    names it has."""
    scales: dict[str, float | None] = {choice.name: choice.scale for choice in spec.lora}
    given = {adapter.name: index for index, adapter in enumerate(requested)}
    for adapter in requested:  # the request's own scale wins over the model's
        scales[adapter.name] = adapter.scale
    if len(scales) > MAX_ADAPTERS_PER_REQUEST:
        raise InvalidRequestError(
            f"Invalid 'lora': model {spec.name!r} draws with {len(spec.lora)} adapters of "
            f"its own; with the request's that is {len(scales)}, more than the "
            f"{MAX_ADAPTERS_PER_REQUEST} one drawing may stack.", param="lora",
            code="invalid_value")
    chosen: list[Choice] = []
    for name, scale in scales.items():
        source = library.find(name)
        if source is None:
            raise _unknown(spec, library, name, given.get(name), len(requested))
        chosen.append((name, source.scale if scale is None else scale))
    return canonical(tuple(chosen))


def _unknown(spec: ModelSpec, library: AdapterLibrary, name: str, index: int | None,
             count: int) -> InvalidRequestError:
    names = library.names()
    has = (f"its adapters are {', '.join(names[:LISTED_NAMES])}"
           f"{' …' if len(names) > LISTED_NAMES else ''}" if names else "it has none")
    if index is None:  # the model's own: the server's configuration, not the request
        return InvalidRequestError(
            f"The model {spec.name!r} draws with the adapter {name!r}, which is not "
            f"available now ({has}).", param="model", code="adapter_not_found")
    param = "lora.name" if count == 1 else f"lora[{index}].name"
    return InvalidRequestError(f"The model {spec.name!r} has no adapter named {name!r} "
                               f"({has}).", param=param, code="adapter_not_found")


@dataclass(frozen=True)
class AdapterOffer:
    """What a request drawn by ``model`` may name in ``lora`` (each adapter with its
    default scale, as the folder holds them now) and the adapters the model applies of
    its own (a derived model's ``lora``; a scale of None: that adapter is missing now).
    Names and scales only, never where the weights are."""

    model: str
    adapters: tuple[Choice, ...]
    applied: tuple[tuple[str, float | None], ...]


def adapter_offer(spec: ModelSpec, library: AdapterLibrary) -> AdapterOffer:
    available = library.defaults()
    defaults = dict(available)
    applied = tuple((choice.name, defaults.get(choice.name) if choice.scale is None
                     else choice.scale) for choice in spec.lora)
    return AdapterOffer(spec.name, tuple(available), applied)


def adapter_offers(catalog: ModelCatalog, name: str | None) -> dict[str, AdapterOffer]:
    """The adapters a public ``name`` (None: the default) answers to, for generations
    and for edits and variations (drawn by its ``edit_model`` where it has one). Reads
    the adapters folders: a blocking call."""
    requested = catalog.requested_name(name)
    generator, editor = catalog.resolve(requested), catalog.resolve_edit(requested)
    offer = adapter_offer(generator, catalog.adapters(generator))
    return {"generations": offer,
            "edits": offer if editor is generator
            else adapter_offer(editor, catalog.adapters(editor))}
