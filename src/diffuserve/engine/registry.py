"""Public model names and aliases → loaded backends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from diffuserve.config import OPENAI_MODEL_NAMES, ModelSpec, Settings
from diffuserve.engine.base import Backend
from diffuserve.errors import ModelNotFoundError


@dataclass
class ServedModel:
    """A configured model and the backend that draws for it."""

    spec: ModelSpec
    backend: Backend
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def name(self) -> str:
        return self.spec.name


class ModelRegistry:
    """Resolves the ``model`` field of a request to a :class:`ServedModel`.

    Names are the configured model names plus aliases: each model's own, the
    ``ALIAS=MODEL`` pairs of the settings and, when ``auto_aliases`` is on, OpenAI's
    model names that no model claimed, pointing at the default model.
    """

    def __init__(
        self,
        models: Sequence[ServedModel],
        aliases: Mapping[str, str] | None = None,
        default: str | None = None,
    ) -> None:
        if not models:
            raise ValueError("a registry needs at least one model")
        self._models = {model.name: model for model in models}
        self.default_name = default or models[0].name
        if self.default_name not in self._models:
            raise ValueError(f"default model {self.default_name!r} is not configured")
        self._aliases: dict[str, str] = {}
        for model in models:
            for alias in model.spec.aliases:
                self._add_alias(alias, model.name)
        for alias, target in (aliases or {}).items():
            self._add_alias(alias, target)

    def _add_alias(self, alias: str, target: str) -> None:
        if target not in self._models:
            raise ValueError(f"alias {alias!r} points at {target!r}, which is not configured")
        if alias in self._models or self._aliases.get(alias, target) != target:
            raise ValueError(f"model name {alias!r} is configured twice")
        self._aliases[alias] = target

    @classmethod
    def from_settings(
        cls, settings: Settings, factory: Callable[[ModelSpec], Backend]
    ) -> ModelRegistry:
        models = [ServedModel(spec, factory(spec)) for spec in settings.models]
        aliases = dict(settings.alias_pairs())
        registry = cls(models, aliases, settings.default_model)
        if settings.auto_aliases:
            for name in OPENAI_MODEL_NAMES:
                if name not in registry._models and name not in registry._aliases:
                    registry._aliases[name] = registry.default_name
        return registry

    def resolve(self, name: str) -> ServedModel:
        target = self._aliases.get(name, name)
        model = self._models.get(target)
        if model is None:
            raise ModelNotFoundError(name)
        return model

    def served_name(self, name: str | None) -> str:
        """The configured model a requested name resolves to, for metric labels
        (never the client's free text: that would make label cardinality unbounded)."""
        target = self.request_default() if name is None else name
        target = self._aliases.get(target, target)
        return target if target in self._models else "unknown"

    def request_default(self) -> str:
        """The name an omitted ``model`` means: OpenAI's default where it is served."""
        return "dall-e-2" if "dall-e-2" in self._aliases or "dall-e-2" in self._models \
            else self.default_name

    def names(self) -> Iterator[tuple[str, ServedModel]]:
        """Every public name (models first, then aliases) with the model it serves."""
        yield from self._models.items()
        for alias, target in self._aliases.items():
            yield alias, self._models[target]

    def aliases_of(self, name: str) -> list[str]:
        return [alias for alias, target in self._aliases.items() if target == name]

    @property
    def models(self) -> list[ServedModel]:
        return list(self._models.values())

    @property
    def ready(self) -> bool:
        return all(model.backend.loaded for model in self._models.values())

    def load_all(self) -> None:
        for model in self._models.values():
            if not model.backend.loaded:
                model.backend.load()
