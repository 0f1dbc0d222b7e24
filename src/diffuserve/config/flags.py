"""The command line of the settings, generated from the model itself: one flag per
field (``url_ttl_seconds`` → ``--url-ttl-seconds``), with placeholders and defaults in
words in ``--help``."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo
from pydantic_settings import CliSettingsSource

from diffuserve.config.settings import ModelSelection

#: Shorter spellings of some flags, kept from earlier releases.
CLI_SHORTCUTS = {
    "api_keys": "api-key",
    "aliases": "alias",
    "trusted_proxies": "trusted-proxy",
    "url_ttl_seconds": "url-ttl",
    "request_timeout_seconds": "request-timeout",
    "shutdown_timeout_seconds": "shutdown-timeout",
    "header_timeout_seconds": "header-timeout",
    "keep_alive_timeout_seconds": "keep-alive-timeout",
}

#: Settings read from the environment or files only.
NOT_FLAGS = frozenset({"models", "signing_secret", "provenance_cert", "provenance_key"})

#: What a flag's value looks like in ``--help``, where its type would not say it
#: (pydantic-settings prints the type: ``tuple[str,...]``, ``{Path,null}``). Other fields
#: are named by :func:`_metavar_of_type`; a Literal keeps its ``{choice,...}``.
CLI_METAVARS = {
    "aliases": "ALIAS=MODEL",
    "default_model": "NAME",
    "model": "[NAME=]SOURCE",
    "host": "ADDRESS",
    "port": "PORT",
    "api_keys": "KEY",
    "storage_dir": "DIR",
    "public_url": "URL",
    "storage_url": "s3://BUCKET[/PREFIX]",
    "trusted_proxies": "IP/CIDR",
    "cors_origins": "ORIGIN",
    "png_compress_level": "0-9",
    "content_policy": "NAME",
    "rate_limit_storage": "URL",
}


def _metavar_of_type(name: str, annotation: Any) -> str | None:
    """A placeholder in words for a field's value from its name and type; None for a
    Literal (argparse shows its choices) or a bool (a flag takes no value)."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return None
    if origin in (tuple, typing.Union, types.UnionType) and args:
        return _metavar_of_type(name, args[0])  # a list's item; an optional's value
    if annotation is bool:
        return None
    if annotation is Path:
        return "PATH"
    for suffix in ("seconds", "bytes"):
        if name.endswith(f"_{suffix}"):
            return suffix.upper()
    return {int: "N", float: "NUMBER"}.get(annotation, "TEXT")


def _default_in_words(field: FieldInfo) -> str | None:
    """A field's default as a user would type it; None where nothing is set by default."""
    value = (field.default_factory() if field.default_factory is not None  # type: ignore[call-arg]
             else field.default)
    if value is None or value == ():
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _describe_flags(settings_cls: type[ModelSelection], parser: Any) -> None:
    """Each generated flag's placeholder and default in words (``--models-file PATH``,
    ``(default: 3600)``), not pydantic-settings' type names (``{Path,null}``)."""
    for action in parser._actions:
        field = settings_cls.model_fields.get(action.dest)
        if field is None or not action.option_strings:
            continue
        if action.metavar is not None:
            metavar = CLI_METAVARS.get(action.dest) or _metavar_of_type(action.dest,
                                                                         field.annotation)
            if metavar is not None:
                action.metavar = metavar
        default = _default_in_words(field)
        text = field.description or ""
        if default is not None:
            text = f"{text} (default: {default})" if text else f"default: {default}"
        action.help = text.replace("%", "%%")  # argparse formats help with %


def settings_cli(
    settings_cls: type[ModelSelection], parser: Any
) -> CliSettingsSource[ModelSelection]:
    """Add one flag per field of ``settings_cls`` to the argparse ``parser``; the source
    returned turns the parsed namespace back into settings, above the environment::

        source = settings_cli(Settings, parser)
        settings = Settings(_cli_settings_source=source(parsed_args=namespace))
    """
    shortcuts = {name.replace("_", "-"): flag for name, flag in CLI_SHORTCUTS.items()
                 if name in settings_cls.model_fields}
    source: CliSettingsSource[ModelSelection] = CliSettingsSource(
        settings_cls, root_parser=parser, cli_shortcuts=shortcuts)
    # CliSuppress only hides a flag from the help; these must not exist at all (a secret
    # on the command line shows in `ps`; model tables belong in the TOML file).
    for action in list(parser._actions):
        if action.dest in NOT_FLAGS:
            parser._remove_action(action)
            for option in action.option_strings:
                parser._option_string_actions.pop(option, None)
    _describe_flags(settings_cls, parser)
    return source
