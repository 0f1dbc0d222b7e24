"""Configuration, the bottom layer: settings, models, keys, limits and the URLs they
name. It imports nothing else of diffuserve, so every layer (and every engine process)
can read it without loading the ones above.

- :mod:`~diffuserve.config.settings`: :class:`Settings` ⊃ :class:`ModelSelection`
  (pydantic-settings, frozen; CLI > ``DIFFUSERVE_*`` > defaults)
- :mod:`~diffuserve.config.flags`: :func:`settings_cli`, the flags built from the model
- :mod:`~diffuserve.config.models`: :class:`ModelSpec`, ``--model`` and the models file
- :mod:`~diffuserve.config.keys`: API keys as digests, the keys file, constant-time lookup
- :mod:`~diffuserve.config.limits`: per-key :class:`~diffuserve.config.limits.Limits`,
  the rate-limit storage URL
- :mod:`~diffuserve.config.urls`: storage URLs, browser origins, secrets masked in URLs
"""

from diffuserve.config.flags import CLI_METAVARS, CLI_SHORTCUTS, NOT_FLAGS, settings_cli
from diffuserve.config.limits import RATE_LIMIT_SCHEMES, check_rate_limit_storage
from diffuserve.config.models import (
    CompileMode,
    Device,
    DType,
    ModelSpec,
    RayOptions,
    load_models_file,
    parse_model_flag,
)
from diffuserve.config.settings import (
    PNG_COMPRESS_LEVEL,
    ModelSelection,
    Settings,
    default_storage_dir,
)
from diffuserve.config.urls import browser_origin, mask_url, url_secrets

__all__ = [
    "CLI_METAVARS",
    "CLI_SHORTCUTS",
    "NOT_FLAGS",
    "PNG_COMPRESS_LEVEL",
    "RATE_LIMIT_SCHEMES",
    "CompileMode",
    "DType",
    "Device",
    "ModelSelection",
    "ModelSpec",
    "RayOptions",
    "Settings",
    "browser_origin",
    "check_rate_limit_storage",
    "default_storage_dir",
    "load_models_file",
    "mask_url",
    "parse_model_flag",
    "settings_cli",
    "url_secrets",
]
