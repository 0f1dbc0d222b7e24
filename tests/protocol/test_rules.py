"""OpenAI's request validation: body shape and types, then the rules of each model name."""

from __future__ import annotations

import json

import pytest

from diffuserve.api.errors import to_api_error
from diffuserve.protocol.common import JSON_PARSE_MESSAGE, translate_validation_errors
from diffuserve.protocol.errors import InvalidRequestError
from diffuserve.protocol.generations import parse_generation_request
from diffuserve.protocol.rules import (
    DALL_E_2,
    DALL_E_3,
    GENERIC,
    GPT_IMAGE_1,
    GPT_IMAGE_2,
    MAX_GUIDANCE,
    MAX_SEED,
    MAX_STEPS,
    MAX_USER_LENGTH,
    ModelRules,
    ValidatedRequest,
    rules_for,
)
from diffuserve.protocol.sizes import Size
from diffuserve.service.planning import drawn_size
from tests.support.validation import make_request, rejection, validate

ALL_RULES = pytest.mark.parametrize(
    "rules",
    [DALL_E_2, DALL_E_3, GPT_IMAGE_1, GENERIC],
    ids=["dall-e-2", "dall-e-3", "gpt-image-1", "generic"],
)


def parse_error(raw: bytes) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        parse_generation_request(raw)
    return info.value


# --- rules by model name ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rules"),
    [
        ("dall-e-2", DALL_E_2),
        ("dall-e-3", DALL_E_3),
        ("gpt-image-1", GPT_IMAGE_1),
        ("my-local-sdxl", GENERIC),
    ],
)
def test_rules_for_picks_the_table_of_the_requested_name(name: str, rules: ModelRules) -> None:
    assert rules_for(name) is rules


# --- prompt ----------------------------------------------------------------------------

PROMPT_LIMITS = pytest.mark.parametrize(
    ("rules", "limit"),
    [(DALL_E_2, 1000), (DALL_E_3, 4000), (GPT_IMAGE_1, 32000), (GENERIC, 32000)],
    ids=["dall-e-2", "dall-e-3", "gpt-image-1", "generic"],
)


@PROMPT_LIMITS
def test_prompt_at_the_length_limit_is_accepted(rules: ModelRules, limit: int) -> None:
    assert validate(rules, prompt="x" * limit).prompt == "x" * limit


@PROMPT_LIMITS
def test_prompt_one_past_the_limit_is_rejected(rules: ModelRules, limit: int) -> None:
    error = rejection(rules, prompt="x" * (limit + 1))

    assert error.message == (
        "Invalid 'prompt': string too long. Expected a string with maximum length "
        f"{limit}, but got a string with length {limit + 1} instead."
    )
    assert (error.param, error.code) == ("prompt", "string_above_max_length")


@ALL_RULES
def test_empty_prompt_is_rejected(rules: ModelRules) -> None:
    error = rejection(rules, prompt="")

    assert error.message == (
        "Invalid 'prompt': empty string. Expected a string with minimum length 1, "
        "but got an empty string instead."
    )
    assert (error.param, error.code) == ("prompt", "empty_string")


# --- n ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rules", [DALL_E_2, GPT_IMAGE_1, GENERIC])
@pytest.mark.parametrize("n", [1, 10])
def test_n_within_one_to_ten_is_accepted(rules: ModelRules, n: int) -> None:
    assert validate(rules, n=n).n == n


@ALL_RULES
def test_n_defaults_to_one(rules: ModelRules) -> None:
    assert validate(rules).n == 1


@pytest.mark.parametrize("rules", [DALL_E_2, GPT_IMAGE_1, GENERIC])
@pytest.mark.parametrize(
    ("n", "message"),
    [
        (0, "0 is less than the minimum of 1 - 'n'"),
        (-3, "-3 is less than the minimum of 1 - 'n'"),
        (11, "11 is greater than the maximum of 10 - 'n'"),
    ],
)
def test_n_outside_one_to_ten_is_rejected(rules: ModelRules, n: int, message: str) -> None:
    error = rejection(rules, n=n)

    assert (error.message, error.param) == (message, "n")


@pytest.mark.parametrize("n", [0, 2, 10])
def test_dall_e_3_demands_n_equal_one(n: int) -> None:
    error = rejection(DALL_E_3, n=n)

    assert (error.message, error.param) == ("You must provide n=1 for this model.", "n")


# --- size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "size", "expected"),
    [
        (DALL_E_2, "256x256", (256, 256)),
        (DALL_E_2, "512x512", (512, 512)),
        (DALL_E_2, "1024x1024", (1024, 1024)),
        (DALL_E_3, "1024x1024", (1024, 1024)),
        (DALL_E_3, "1792x1024", (1792, 1024)),
        (DALL_E_3, "1024x1792", (1024, 1792)),
        (GPT_IMAGE_1, "1024x1024", (1024, 1024)),
        (GPT_IMAGE_1, "1536x1024", (1536, 1024)),
        (GPT_IMAGE_1, "1024x1536", (1024, 1536)),
        (GPT_IMAGE_1, "auto", (1024, 1024)),
        (GENERIC, "256x256", (256, 256)),
        (GENERIC, "1792x1024", (1792, 1024)),
        (GENERIC, "1024x1792", (1024, 1792)),
        (GENERIC, "1536x1024", (1536, 1024)),
        (GENERIC, "auto", (1024, 1024)),
        (GENERIC, "1000x1000", (1000, 1000)),
        (GENERIC, "1472x1140", (1472, 1140)),  # Qwen-Image's 4:3, no side a multiple of 16
        (GENERIC, "64x192", (64, 192)),
        (GENERIC, "4096x2025", (4096, 2025)),  # 3840x2160's pixels, the longest side
    ],
)
def test_supported_size_gives_width_and_height(
    rules: ModelRules, size: str, expected: tuple[int, int]
) -> None:
    validated = validate(rules, size=size)

    assert str(validated.size) == size  # as requested: auto is decided by planning
    assert drawn_size(validated) == Size(*expected)


@pytest.mark.parametrize(
    ("rules", "size"),
    [
        (DALL_E_2, "1792x1024"),
        (DALL_E_2, "auto"),
        (DALL_E_3, "256x256"),
        (DALL_E_3, "512x512"),
        (DALL_E_3, "1536x1024"),
        (GPT_IMAGE_1, "1792x1024"),
        (GPT_IMAGE_1, "512x512"),
        (GENERIC, "63x128"),  # a side below 64
        (GENERIC, "4097x2000"),  # a side above 4096
        (GENERIC, "4096x2048"),  # more pixels than 3840x2160
        (GENERIC, "64x193"),  # more than three times as long as wide
    ],
)
def test_well_formed_size_the_model_lacks_is_invalid_size_naming_the_sizes_it_takes(
    rules: ModelRules, size: str
) -> None:
    error = rejection(rules, size=size)

    # OpenAI's sentence, then the sizes of the requested name (a client that shows the
    # message alone, as Open WebUI does, then tells its user what to pick).
    free = "" if rules.free_limits is None else f", or {rules.free_limits.hint}"
    assert error.message == ("The size is not supported by this model. Supported sizes "
                             f"for some-model: {', '.join(rules.sizes)}{free}.")
    assert (error.param, error.code) == ("size", "invalid_size")


def test_any_other_name_says_which_free_sizes_it_takes() -> None:
    error = rejection(GENERIC, size="5000x5000")

    assert error.message.endswith(
        "1536x1024, 1024x1536, auto, or WIDTHxHEIGHT with both sides from 64, the longer at "
        "most 4096 and at most 3 times the shorter, and at most 8294400 pixels.")


def test_a_free_size_name_says_which_free_sizes_it_takes() -> None:
    error = rejection(GPT_IMAGE_2, size="100x100")

    assert error.message.startswith(
        "The size is not supported by this model. Supported sizes for some-model: auto, "
        "1024x1024, 1536x1024, 1024x1536, or WIDTHxHEIGHT with both sides multiples of 16")


def test_malformed_size_names_the_allowed_values_as_openai_does() -> None:
    error = rejection(DALL_E_2, size="256×256")

    assert error.message == (
        "'256×256' is not one of ['256x256', '512x512', '1024x1024'] - 'size'"
    )
    assert (error.param, error.code) == ("size", "invalid_size")


@ALL_RULES
@pytest.mark.parametrize(
    "size", ["", "large", "1024", "1024X1024", "1024x1024px", "0x0", "-256x256", " 256x256"]
)
def test_malformed_size_is_rejected_not_crashed_on(rules: ModelRules, size: str) -> None:
    error = rejection(rules, size=size)

    assert error.message == f"{size!r} is not one of {list(rules.sizes)!r} - 'size'"
    assert error.param == "size"


# --- quality, style, response_format ---------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "quality"),
    [
        (DALL_E_2, "standard"),
        (DALL_E_3, "standard"),
        (DALL_E_3, "hd"),
        (GPT_IMAGE_1, "auto"),
        (GPT_IMAGE_1, "low"),
        (GPT_IMAGE_1, "medium"),
        (GPT_IMAGE_1, "high"),
        *((GENERIC, quality) for quality in ("standard", "hd", "auto", "low", "medium",
                                             "high")),
    ],
)
def test_supported_quality_is_kept(rules: ModelRules, quality: str) -> None:
    assert validate(rules, quality=quality).quality == quality


@pytest.mark.parametrize(
    ("rules", "quality", "message"),
    [
        (DALL_E_2, "hd", "'hd' is not one of ['standard'] - 'quality'"),
        (DALL_E_3, "high", "'high' is not one of ['standard', 'hd'] - 'quality'"),
        (
            GPT_IMAGE_1,
            "standard",
            "'standard' is not one of ['auto', 'low', 'medium', 'high'] - 'quality'",
        ),
        (GENERIC, "ultra", "'ultra' is not one of ['standard', 'hd', 'auto', 'low', "
                           "'medium', 'high'] - 'quality'"),
    ],
)
def test_unsupported_quality_is_rejected(rules: ModelRules, quality: str, message: str) -> None:
    error = rejection(rules, quality=quality)

    assert (error.message, error.param, error.code) == (message, "quality", "invalid_value")


@pytest.mark.parametrize("rules", [DALL_E_3, GENERIC])
@pytest.mark.parametrize("style", ["vivid", "natural"])
def test_style_is_kept_where_the_model_uses_it(rules: ModelRules, style: str) -> None:
    assert validate(rules, style=style).style == style


@pytest.mark.parametrize("style", ["vivid", "natural"])
def test_dall_e_2_accepts_a_style(style: str) -> None:
    validate(DALL_E_2, style=style)


@ALL_RULES
def test_unknown_style_is_rejected(rules: ModelRules) -> None:
    error = rejection(rules, style="pastel")

    assert error.message == "'pastel' is not one of ['vivid', 'natural'] - 'style'"
    assert (error.param, error.code) == ("style", "invalid_value")


@pytest.mark.parametrize("rules", [DALL_E_2, DALL_E_3, GENERIC])
@pytest.mark.parametrize("response_format", ["url", "b64_json"])
def test_dall_e_response_formats_are_accepted(rules: ModelRules, response_format: str) -> None:
    assert validate(rules, response_format=response_format).response_format == response_format


@pytest.mark.parametrize("rules", [DALL_E_2, DALL_E_3, GENERIC])
def test_unknown_response_format_is_rejected(rules: ModelRules) -> None:
    error = rejection(rules, response_format="png")

    assert error.message == "'png' is not one of ['url', 'b64_json'] - 'response_format'"
    assert (error.param, error.code) == ("response_format", "invalid_value")


def test_gpt_image_1_answers_only_in_base64() -> None:
    error = rejection(GPT_IMAGE_1, response_format="url")

    assert error.message == "'url' is not one of ['b64_json'] - 'response_format'"
    assert error.param == "response_format"


# --- defaults --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (DALL_E_2, (1024, 1024, "standard", None, "url", False)),
        (DALL_E_3, (1024, 1024, "standard", "vivid", "url", True)),
        (GPT_IMAGE_1, (1024, 1024, "auto", None, "b64_json", False)),
        (GENERIC, (1024, 1024, "standard", None, "url", False)),
    ],
    ids=["dall-e-2", "dall-e-3", "gpt-image-1", "generic"],
)
def test_omitted_fields_take_the_model_defaults(
    rules: ModelRules, expected: tuple[object, ...]
) -> None:
    v = validate(rules)

    drawn = drawn_size(v)
    assert (
        drawn.width, drawn.height, v.quality, v.style, v.response_format, v.revise_prompt
    ) == expected


def test_validated_request_carries_the_requested_values() -> None:
    validated = DALL_E_2.validate(
        make_request(
            prompt="a lighthouse",
            n=3,
            size="512x512",
            response_format="b64_json",
            user="user-42",
            seed=7,
            num_inference_steps=12,
            guidance_scale=4.5,
            negative_prompt="blurry",
        ),
        "dall-e-2",
    )

    assert validated == ValidatedRequest(
        model="dall-e-2",
        prompt="a lighthouse",
        n=3,
        size=Size(512, 512),
        quality="standard",
        style=None,
        response_format="b64_json",
        user="user-42",
        seed=7,
        num_inference_steps=12,
        guidance_scale=4.5,
        negative_prompt="blurry",
        revise_prompt=False,
    )


# --- extension fields and user ---------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", 0),
        ("seed", MAX_SEED),
        ("num_inference_steps", 1),
        ("num_inference_steps", MAX_STEPS),
    ],
)
def test_integer_extension_at_its_bound_is_accepted(field: str, value: int) -> None:
    assert getattr(validate(GENERIC, **{field: value}), field) == value


@pytest.mark.parametrize(
    ("field", "value", "message", "code"),
    [
        (
            "seed",
            -1,
            "Invalid 'seed': integer below minimum value. Expected a value >= 0, "
            "but got -1 instead.",
            "integer_below_min_value",
        ),
        (
            "seed",
            MAX_SEED + 1,
            f"Invalid 'seed': integer above maximum value. Expected a value <= {MAX_SEED}, "
            f"but got {MAX_SEED + 1} instead.",
            "integer_above_max_value",
        ),
        (
            "num_inference_steps",
            0,
            "Invalid 'num_inference_steps': integer below minimum value. Expected a value "
            ">= 1, but got 0 instead.",
            "integer_below_min_value",
        ),
        (
            "num_inference_steps",
            MAX_STEPS + 1,
            "Invalid 'num_inference_steps': integer above maximum value. Expected a value "
            f"<= {MAX_STEPS}, but got {MAX_STEPS + 1} instead.",
            "integer_above_max_value",
        ),
    ],
)
def test_integer_extension_out_of_bounds_is_rejected(
    field: str, value: int, message: str, code: str
) -> None:
    error = rejection(GENERIC, **{field: value})

    assert (error.message, error.param, error.code) == (message, field, code)


def test_seed_leaves_room_for_one_seed_per_image() -> None:
    # Image i is drawn from seed + i, so every one of them must stay a valid seed.
    error = rejection(GENERIC, n=2, seed=MAX_SEED)

    assert error.message.startswith(
        f"Invalid 'seed': integer above maximum value. Expected a value <= {MAX_SEED - 1},"
    )


@pytest.mark.parametrize("value", [0, 7, 7.5, MAX_GUIDANCE])
def test_guidance_scale_in_range_is_a_float(value: float) -> None:
    guidance = validate(GENERIC, guidance_scale=value).guidance_scale

    assert guidance == float(value)
    assert isinstance(guidance, float)


@pytest.mark.parametrize("value", [-0.5, MAX_GUIDANCE + 0.5, 100])
def test_guidance_scale_out_of_range_is_rejected(value: float) -> None:
    error = rejection(GENERIC, guidance_scale=value)

    assert error.message == (
        f"Invalid 'guidance_scale': expected a number between 0 and 30, but got {value:g} "
        "instead."
    )
    assert (error.param, error.code) == ("guidance_scale", "invalid_value")


def test_empty_negative_prompt_means_none() -> None:
    assert validate(GENERIC, negative_prompt="").negative_prompt is None


def test_negative_prompt_longer_than_the_prompt_limit_is_rejected() -> None:
    error = rejection(DALL_E_2, negative_prompt="x" * 1001)

    assert (error.param, error.code) == ("negative_prompt", "string_above_max_length")


@pytest.mark.parametrize("user", ["", "u" * MAX_USER_LENGTH])
def test_user_up_to_its_limit_is_accepted(user: str) -> None:
    assert validate(GENERIC, user=user).user == user


def test_user_past_its_limit_is_rejected() -> None:
    error = rejection(GENERIC, user="u" * (MAX_USER_LENGTH + 1))

    assert error.message == (
        "Invalid 'user': string too long. Expected a string with maximum length "
        f"{MAX_USER_LENGTH}, but got a string with length {MAX_USER_LENGTH + 1} instead."
    )
    assert (error.param, error.code) == ("user", "string_above_max_length")


# --- parse_generation_request ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b"prompt=a+fox",
        b"{'prompt': 'a fox'}",
        b"\xff\xfe{}",
        b"[" * 100_000,  # deeper than Python's recursion limit
        b'{"prompt": "a \\ud800 fox"}',  # a lone surrogate is not text
    ],
    ids=["empty", "truncated", "form", "single-quotes", "not-utf8", "too-deep", "surrogate"],
)
def test_body_that_is_not_json_gets_openais_parse_message(raw: bytes) -> None:
    error = parse_error(raw)

    assert (error.message, error.param, error.code) == (JSON_PARSE_MESSAGE, None, None)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [(b"[]", "an array"), (b'"a fox"', "a string"), (b"42", "an integer"), (b"null", "null")],
)
def test_body_that_is_not_an_object_is_rejected(raw: bytes, kind: str) -> None:
    error = parse_error(raw)

    assert error.message == (
        f"Invalid type for the request body: expected an object, but got {kind} instead."
    )
    assert error.code == "invalid_type"


def test_missing_prompt_is_named() -> None:
    error = parse_error(b'{"n": 1}')

    assert error.message == "Missing required parameter: 'prompt'."
    assert (error.param, error.code) == ("prompt", "missing_required_parameter")


def test_missing_prompt_is_reported_before_other_errors() -> None:
    error = parse_error(b'{"foo": 1, "n": "2"}')

    assert error.code == "missing_required_parameter"


def test_unknown_field_is_named() -> None:
    error = parse_error(b'{"prompt": "a fox", "foo": 1}')

    assert error.message == "Unknown parameter: 'foo'."
    assert (error.param, error.code) == ("foo", "unknown_parameter")


@pytest.mark.parametrize(
    ("field", "value", "expected", "got"),
    [
        ("n", "2", "an integer", "a string"),
        ("n", 2.5, "an integer", "a number"),
        ("n", True, "an integer", "a boolean"),
        ("prompt", 5, "a string", "an integer"),
        ("prompt", ["a", "fox"], "a string", "an array"),
        ("size", 1024, "a string", "an integer"),
        ("seed", "42", "an integer", "a string"),
        ("guidance_scale", "x", "a number", "a string"),
        ("guidance_scale", {"v": 1}, "a number", "an object"),
        ("negative_prompt", False, "a string", "a boolean"),
    ],
)
def test_wrong_type_is_named_with_what_was_expected(
    field: str, value: object, expected: str, got: str
) -> None:
    body = {"prompt": "a fox", field: value}

    error = parse_error(json.dumps(body).encode())

    assert error.message == (
        f"Invalid type for '{field}': expected {expected}, but got {got} instead."
    )
    assert (error.param, error.code) == (field, "invalid_type")


def test_null_fields_mean_omitted() -> None:
    optional = [
        "model", "n", "size", "quality", "style", "response_format", "user",
        "seed", "num_inference_steps", "guidance_scale", "negative_prompt",
    ]
    with_nulls = parse_generation_request(
        json.dumps({"prompt": "a fox", **dict.fromkeys(optional)}).encode()
    )

    assert DALL_E_3.validate(with_nulls, "dall-e-3") == DALL_E_3.validate(
        parse_generation_request(b'{"prompt": "a fox"}'), "dall-e-3"
    )


def test_every_field_is_parsed() -> None:
    body = {
        "prompt": "a fox",
        "model": "dall-e-3",
        "n": 1,
        "size": "1792x1024",
        "quality": "hd",
        "style": "natural",
        "response_format": "b64_json",
        "user": "u1",
        "seed": 3,
        "num_inference_steps": 20,
        "guidance_scale": 6,
        "negative_prompt": "fog",
    }

    parsed = parse_generation_request(json.dumps(body).encode())

    assert parsed.model_dump(exclude_none=True) == body


# --- translate_validation_errors -------------------------------------------------------


def test_no_errors_still_gives_a_400_message() -> None:
    error = translate_validation_errors([])

    assert error.message == "Invalid request body."


def test_fastapi_body_prefix_is_left_out_of_the_param() -> None:
    error = translate_validation_errors(
        [{"type": "missing", "loc": ("body", "prompt"), "msg": "Field required", "input": {}}]
    )

    assert error.message == "Missing required parameter: 'prompt'."
    assert error.param == "prompt"


def test_fastapi_json_error_gets_openais_parse_message() -> None:
    error = translate_validation_errors(
        [{"type": "json_invalid", "loc": ("body", 1), "msg": "JSON decode error", "input": {}}]
    )

    assert error.message == JSON_PARSE_MESSAGE


def test_missing_field_wins_over_an_earlier_type_error() -> None:
    error = translate_validation_errors(
        [
            {"type": "int_type", "loc": ("body", "n"), "input": "2"},
            {"type": "missing", "loc": ("body", "prompt"), "input": {}},
        ]
    )

    assert error.param == "prompt"


def test_unfamiliar_error_kind_still_names_the_field() -> None:
    error = translate_validation_errors(
        [{"type": "literal_error", "loc": ("body", "size"), "input": "huge"}]
    )

    assert error.message == (
        "Invalid type for 'size': expected a valid value, but got a string instead."
    )
    assert (error.param, error.code) == ("size", "invalid_type")


# --- the error envelope ----------------------------------------------------------------


def test_envelope_has_exactly_openais_four_keys() -> None:
    error = to_api_error(rejection(DALL_E_3, n=2))

    assert error.status_code == 400
    assert error.envelope() == {
        "error": {
            "message": "You must provide n=1 for this model.",
            "type": "invalid_request_error",
            "param": "n",
            "code": None,
        }
    }
