"""Edit and variation bodies read, checked and decoded at once, as the service does for
them (an omitted ``model`` is the given default, as the catalog's would be)."""

from __future__ import annotations

from typing import Any

from diffuserve.protocol.edits import (
    EditRequest,
    Form,
    PendingEdit,
    VariationRequest,
    check_edit,
    check_variation,
    decode_edit,
    decode_variation,
    read_edit_form,
    read_edit_json,
    read_variation_form,
)


def checked_edit_form(form: Form, default: str) -> PendingEdit:
    """Read and checked, not decoded."""
    body = read_edit_form(form)
    return check_edit(body, body.model or default)


def parse_edit_form(form: Form, default: str) -> EditRequest:
    return decode_edit(checked_edit_form(form, default))


def parse_edit_json(payload: Any, default: str) -> EditRequest:
    body = read_edit_json(payload)
    return decode_edit(check_edit(body, body.model or default))


def parse_variation_form(form: Form, default: str) -> VariationRequest:
    body = read_variation_form(form)
    return decode_variation(check_variation(body, body.model or default))
