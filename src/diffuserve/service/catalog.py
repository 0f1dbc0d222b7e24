"""Public model names → configured models.

The engine knows its models by their configured names only; which public names reach
them (each model's aliases, the ``ALIAS=MODEL`` settings, and OpenAI's names pointing at
the default model) is the service's business.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

from diffuserve.config import ModelSelection, ModelSpec
from diffuserve.engine.adapters import AdapterLibrary
from diffuserve.protocol.errors import ModelNotFoundError
from diffuserve.protocol.rules import DEFAULT_MODEL_NAME, OPENAI_MODEL_NAMES


class ModelCatalog:
    """Resolves the ``model`` field of a request to a :class:`ModelSpec`.

    Names are the configured model names plus aliases: each model's own, the
    ``aliases`` pairs and, for each of ``open_names`` that no model claimed, an alias
    of the default model.
    """

    def __init__(
        self,
        specs: Sequence[ModelSpec],
        aliases: Mapping[str, str] | None = None,
        default: str | None = None,
        open_names: Iterable[str] = (),
    ) -> None:
        if not specs:
            raise ValueError("a catalog needs at least one model")
        self._models = {spec.name: spec for spec in specs}
        self.default_name = default or specs[0].name
        if self.default_name not in self._models:
            raise ValueError(f"default model {self.default_name!r} is not configured")
        self._aliases: dict[str, str] = {}
        for spec in specs:
            for alias in spec.aliases:
                self._add_alias(alias, spec.name)
        for alias, target in (aliases or {}).items():
            self._add_alias(alias, target)
        #: Model → the model that draws its edits and variations (``edit_model``).
        self._editors = {spec.name: self._editor(spec) for spec in specs
                         if spec.edit_model is not None}
        for name in open_names:
            if name not in self._models and name not in self._aliases:
                self._aliases[name] = self.default_name
        #: When the models became available, for OpenAI's ``created`` field.
        self.created = int(time.time())
        #: Each model's LoRA adapters by name.
        self._adapters = {spec.name: AdapterLibrary(spec) for spec in specs}

    def _add_alias(self, alias: str, target: str) -> None:
        if target not in self._models:
            raise ValueError(f"alias {alias!r} points at {target!r}, which is not configured")
        if alias in self._models or self._aliases.get(alias, target) != target:
            raise ValueError(f"model name {alias!r} is configured twice")
        self._aliases[alias] = target

    def _editor(self, spec: ModelSpec) -> str:
        """The configured model ``spec.edit_model`` names (a model's name or alias; not
        one of OpenAI's names, which only point at the default model)."""
        name = str(spec.edit_model)
        target = self._aliases.get(name, name)
        if target not in self._models:
            raise ValueError(f"model {spec.name!r} has edit_model = {name!r}, which is not "
                             "a configured model's name or alias")
        return target

    @classmethod
    def from_settings(cls, settings: ModelSelection) -> ModelCatalog:
        return cls(
            settings.models, dict(settings.alias_pairs()), settings.default_model,
            OPENAI_MODEL_NAMES if settings.auto_aliases else (),
        )

    def resolve(self, name: str) -> ModelSpec:
        spec = self._models.get(self._aliases.get(name, name))
        if spec is None:
            raise ModelNotFoundError(name)
        return spec

    def resolve_edit(self, name: str) -> ModelSpec:
        """The model that draws edits and variations for ``name``: the model ``name``
        resolves to, or the one its ``edit_model`` names."""
        spec = self.resolve(name)
        editor = self._editors.get(spec.name)
        return spec if editor is None else self._models[editor]

    def served_name(self, name: str | None) -> str:
        """The configured model a requested name resolves to, for metric labels
        (never the client's free text: that would make label cardinality unbounded)."""
        target = self.requested_name(name)
        target = self._aliases.get(target, target)
        return target if target in self._models else "unknown"

    def request_default(self) -> str:
        """The name an omitted ``model`` means: OpenAI's default where it is served."""
        served = DEFAULT_MODEL_NAME in self._aliases or DEFAULT_MODEL_NAME in self._models
        return DEFAULT_MODEL_NAME if served else self.default_name

    def requested_name(self, name: str | None) -> str:
        """The name a request asked for, its rules' name: ``name``, or for none (None)
        the one place the default is resolved, :meth:`request_default`."""
        return self.request_default() if name is None else name

    def names(self) -> Iterator[tuple[str, ModelSpec]]:
        """Every public name (models first, then aliases) with the model it serves."""
        yield from self._models.items()
        for alias, target in self._aliases.items():
            yield alias, self._models[target]

    def aliases_of(self, name: str) -> list[str]:
        return [alias for alias, target in self._aliases.items() if target == name]

    def adapters(self, spec: ModelSpec) -> AdapterLibrary:
        """The LoRA adapters model ``spec`` answers to (a derived model: its base's)."""
        return self._adapters[spec.name]

    @property
    def specs(self) -> list[ModelSpec]:
        return list(self._models.values())
