"""API keys: OpenAI's 401s, digests instead of plaintext, the keys file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from diffuserve.api.auth import NO_KEY_MESSAGE, KeyStore, mask_key, read_keys_file
from diffuserve.api.errors import AuthenticationError

KEY = "sk-test-abcdef0123456789xyz"
OTHER_KEY = "sk-other-9876543210fedcba"


def refusal(store: KeyStore, authorization: str | None) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        store.check(authorization)
    return info.value


def sha256_entry(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


# --- an empty store --------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer anything", "Basic Zm9vOmJhcg=="])
def test_empty_store_accepts_every_request(authorization: str | None) -> None:
    store = KeyStore()

    store.check(authorization)
    assert not store.enabled


# --- the right key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER {KEY}", f"  Bearer   {KEY}  "]
)
def test_correct_bearer_key_is_accepted(authorization: str) -> None:
    KeyStore([KEY]).check(authorization)


def test_any_configured_key_is_accepted() -> None:
    store = KeyStore([KEY, OTHER_KEY])

    store.check(f"Bearer {OTHER_KEY}")
    assert len(store) == 2


def test_sha256_entry_accepts_its_key() -> None:
    KeyStore([sha256_entry(KEY)]).check(f"Bearer {KEY}")


def test_sha256_entry_in_upper_case_accepts_its_key() -> None:
    entry = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest().upper()

    KeyStore([entry]).check(f"Bearer {KEY}")


def test_sha256_entry_is_not_itself_a_key() -> None:
    entry = sha256_entry(KEY)

    error = refusal(KeyStore([entry]), f"Bearer {entry}")

    assert error.code == "invalid_api_key"


@pytest.mark.parametrize("entry", ["sha256:abcd", "sha256:" + "0" * 66, "sha256:" + "zz" * 32])
def test_malformed_sha256_entry_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValueError):
        KeyStore([entry])


# --- a wrong or missing key ------------------------------------------------------------


def test_wrong_key_gets_openais_401_with_the_key_masked() -> None:
    error = refusal(KeyStore([KEY]), "Bearer sk-wrong-key-0000xyz")

    assert error.status_code == 401
    assert error.message.startswith("Incorrect API key provided: sk-wr***yz. ")
    assert error.code == "invalid_api_key"


def test_wrong_key_message_does_not_echo_the_key() -> None:
    wrong = "sk-wrong-key-0000xyz"

    error = refusal(KeyStore([KEY]), f"Bearer {wrong}")

    assert wrong not in error.message


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer    ", KEY, f"Basic {KEY}", f"Token {KEY}"],
    ids=["absent", "empty", "scheme-only", "blank-token", "no-scheme", "basic", "token"],
)
def test_missing_or_non_bearer_header_gets_openais_no_key_401(authorization: str | None) -> None:
    error = refusal(KeyStore([KEY]), authorization)

    assert error.status_code == 401
    assert error.message == NO_KEY_MESSAGE
    assert error.message.startswith("You didn't provide an API key.")
    assert error.code is None


# --- masking ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("sk-abcdefghijklmnxyz", "sk-ab***yz"),
        ("0123456789", "01234***89"),
        ("012345678", "***"),
        ("", "***"),
    ],
)
def test_mask_key_shows_only_the_ends_of_long_keys(key: str, masked: str) -> None:
    assert mask_key(key) == masked


# --- keys file -------------------------------------------------------------------------


def test_keys_file_skips_comments_blank_lines_and_key_names(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    digest = sha256_entry(OTHER_KEY)
    keys_file.write_text(
        "# keys for the team\n"
        "\n"
        f"{KEY}   alice's laptop\n"
        f"   {digest}  # ci runner\n"
        "   # retired: sk-old-key\n",
        encoding="utf-8",
    )

    assert [entry.key for entry in read_keys_file(keys_file)] == [KEY, digest]


def test_keys_file_entries_are_accepted_by_a_store(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{KEY} alice\n{sha256_entry(OTHER_KEY)} bob\n", encoding="utf-8")
    store = KeyStore(read_keys_file(keys_file))

    store.check(f"Bearer {KEY}")
    store.check(f"Bearer {OTHER_KEY}")


def test_commented_out_key_is_refused(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{KEY}\n# {OTHER_KEY}\n", encoding="utf-8")

    error = refusal(KeyStore(read_keys_file(keys_file)), f"Bearer {OTHER_KEY}")

    assert error.code == "invalid_api_key"


# --- no plaintext ----------------------------------------------------------------------


def test_store_keeps_no_plaintext_key() -> None:
    store = KeyStore([KEY])

    # repr() shows str and bytes values alike, nested in tuples or not.
    assert KEY not in repr(vars(store))
