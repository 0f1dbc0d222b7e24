"""Signed expiring image links, the persisted signing key, and the local image directory."""

from __future__ import annotations

import errno
import multiprocessing
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from diffuserve.storage.base import ImageGone, LinkExpired, LinkInvalid
from diffuserve.storage.local import LocalImageStore
from diffuserve.storage.signing import (
    SECRET_FILE,
    SigningKeyUnusable,
    UrlSigner,
    load_or_create_secret,
)

SECRET = b"0123456789abcdef0123456789abcdef"
NAME = "img_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png"
NOW = 1_700_000_000.0
TTL = 3600
PNG = b"\x89PNG\r\n\x1a\n fake image bytes"

Tamper = Callable[[str, str, str], tuple[str, str, str]]


def link_params(url: str) -> tuple[str, str, str]:
    """The file name, ``expires`` and ``sig`` of a signed link."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path.rsplit("/", 1)[1], query["expires"][0], query["sig"][0]


@pytest.fixture
def signer() -> UrlSigner:
    return UrlSigner(SECRET, TTL)


def make_store(directory: Path, signer: UrlSigner | None = None) -> LocalImageStore:
    return LocalImageStore(directory, TTL, signer or UrlSigner(SECRET, TTL),
                           link_path="/v1/images/files")


@pytest.fixture
def store(tmp_path: Path, signer: UrlSigner) -> LocalImageStore:
    return make_store(tmp_path / "images", signer)


def link_of(signer: UrlSigner, base_url: str = "http://localhost:8000") -> str:
    """A link to ``NAME`` made at ``NOW`` by a store signing with ``signer``."""
    store = make_store(Path(tempfile.gettempdir()) / "diffuserve-link-tests", signer)
    return store.link(NAME, base_url=base_url, now=NOW)


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look ``seconds`` old at ``NOW``."""
    os.utime(path, (NOW - seconds, NOW - seconds))


# --- UrlSigner -------------------------------------------------------------------------


@pytest.mark.parametrize("base_url", ["https://img.example.com", "https://img.example.com/"])
def test_url_points_at_the_files_route_with_expiry_and_signature(
    signer: UrlSigner, base_url: str
) -> None:
    url = link_of(signer, base_url)

    match = re.fullmatch(
        rf"https://img\.example\.com/v1/images/files/{re.escape(NAME)}"
        r"\?expires=(\d+)&sig=([0-9a-f]{64})",
        url,
    )
    assert match is not None
    assert int(match.group(1)) == int(NOW) + TTL


def test_signed_link_verifies(signer: UrlSigner) -> None:
    name, expires, sig = link_params(link_of(signer))

    signer.verify(name, expires, sig, NOW + 10)


def test_link_is_valid_until_its_last_second(signer: UrlSigner) -> None:
    name, expires, sig = link_params(link_of(signer))

    signer.verify(name, expires, sig, NOW + TTL)


def test_expired_link_is_not_found(signer: UrlSigner) -> None:
    name, expires, sig = link_params(link_of(signer))

    with pytest.raises(LinkExpired) as info:
        signer.verify(name, expires, sig, NOW + TTL + 1)

    assert info.value.ttl_seconds == TTL


def test_link_signed_with_another_secret_is_refused(signer: UrlSigner) -> None:
    other = UrlSigner(b"another-secret-another-secret-!!", TTL)
    name, expires, sig = link_params(link_of(other))

    with pytest.raises(LinkInvalid):
        signer.verify(name, expires, sig, NOW)


def _flip_last_hex_digit(sig: str) -> str:
    return sig[:-1] + ("0" if sig[-1] != "0" else "1")


@pytest.mark.parametrize(
    "tamper",
    [
        lambda n, e, s: (n, e, _flip_last_hex_digit(s)),
        lambda n, e, s: (n, e, s.upper()),
        lambda n, e, s: ("img_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB.png", e, s),
        lambda n, e, s: (n, str(int(e) + 86400), s),
    ],
    ids=["sig", "sig-case", "other-name", "later-expiry"],
)
def test_tampered_link_is_forbidden(signer: UrlSigner, tamper: Tamper) -> None:
    name, expires, sig = tamper(*link_params(link_of(signer)))

    with pytest.raises(LinkInvalid) as info:
        signer.verify(name, expires, sig, NOW)

    assert info.value.reason == "its signature does not match"


@pytest.mark.parametrize(
    ("expires", "sig"),
    [
        (None, "ab" * 32),
        ("1700003600", None),
        ("", "ab" * 32),
        ("1700003600", ""),
        ("soon", "ab" * 32),
        ("-1", "ab" * 32),
        ("1" * 13, "ab" * 32),
        ("²", "ab" * 32),  # a Unicode digit that int() refuses
        ("١٧٠٠٠٠٣٦٠٠", "ab" * 32),  # Arabic-Indic digits
        ("1700003600", "é"),  # compare_digest refuses non-ASCII text
        ("1700003600", "\x80" * 64),
    ],
)
def test_missing_or_malformed_link_parameters_are_forbidden(
    signer: UrlSigner, expires: str | None, sig: str | None
) -> None:
    with pytest.raises(LinkInvalid):
        signer.verify(NAME, expires, sig, NOW)


def test_short_signing_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        UrlSigner(b"too-short", TTL)


# --- load_or_create_secret -------------------------------------------------------------


def test_secret_is_created_with_its_folder(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path / "new" / "images")

    assert len(secret) >= 32
    assert (tmp_path / "new" / "images" / SECRET_FILE).read_bytes() == secret


def test_secret_survives_a_restart(tmp_path: Path) -> None:
    first = load_or_create_secret(tmp_path)

    assert load_or_create_secret(tmp_path) == first


def test_secret_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    load_or_create_secret(tmp_path)

    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600


def test_each_storage_folder_gets_its_own_secret(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path / "a") != load_or_create_secret(tmp_path / "b")


@pytest.mark.parametrize("content", [b"", b"\n", b"weak\n", b"x" * 31])
def test_a_too_short_key_file_is_refused_and_kept(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SECRET_FILE).write_bytes(content)

    with pytest.raises(SigningKeyUnusable) as info:
        load_or_create_secret(tmp_path)

    # Replacing it would void every link given out: the operator decides.
    assert (tmp_path / SECRET_FILE).read_bytes() == content
    message = info.value.reason
    assert str(tmp_path / SECRET_FILE) in message
    assert "delete the file" in message and "at least 32 bytes" in message


def test_a_key_file_of_32_bytes_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_bytes(b"k" * 32 + b"\n")

    assert load_or_create_secret(tmp_path) == b"k" * 32


def test_an_unreadable_key_file_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).mkdir()  # unreadable as a file, even for root

    with pytest.raises(SigningKeyUnusable, match="cannot be read") as info:
        load_or_create_secret(tmp_path)

    assert str(tmp_path / SECRET_FILE) in info.value.reason
    assert (tmp_path / SECRET_FILE).is_dir()


def test_a_key_another_process_made_first_is_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    theirs = b"t" * 64
    make_key = secrets.token_hex

    def made_elsewhere_meanwhile(nbytes: int) -> str:
        # Between finding no key and writing one, another process writes its own.
        if not (tmp_path / SECRET_FILE).exists():
            (tmp_path / SECRET_FILE).write_bytes(theirs)
        return make_key(nbytes)

    monkeypatch.setattr(secrets, "token_hex", made_elsewhere_meanwhile)

    assert load_or_create_secret(tmp_path) == theirs
    assert (tmp_path / SECRET_FILE).read_bytes() == theirs
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]


def _keys_made_at_once(folders: list[Path], barrier: Any, results: Any) -> None:
    keys = []
    for folder in folders:
        barrier.wait()
        keys.append(load_or_create_secret(folder))
    results.put(keys)


def test_processes_starting_at_once_agree_on_one_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    folders = [tmp_path / f"images-{i}" for i in range(30)]
    processes = 6
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [context.Process(target=_keys_made_at_once, args=(folders, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    answers = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    for index, folder in enumerate(folders):
        on_disk = (folder / SECRET_FILE).read_bytes()
        assert {keys[index] for keys in answers} == {on_disk}
        assert [p.name for p in folder.iterdir()] == [SECRET_FILE]


def test_a_file_system_without_hard_links_still_gets_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)

    secret = load_or_create_secret(tmp_path)

    assert len(secret) >= 32
    assert (tmp_path / SECRET_FILE).read_bytes() == secret
    assert stat.S_IMODE((tmp_path / SECRET_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [SECRET_FILE]
    assert load_or_create_secret(tmp_path) == secret


# --- LocalImageStore -------------------------------------------------------------------


def test_stored_image_is_found_by_its_name(store: LocalImageStore) -> None:
    name = store.put(PNG, "image/png")

    path = store.path_of(name)

    assert path is not None
    assert path.read_bytes() == PNG


@pytest.mark.parametrize(("content_type", "suffix"), [
    ("image/png", ".png"), ("image/jpeg", ".jpeg"), ("image/webp", ".webp")])
def test_stored_image_keeps_its_type(store: LocalImageStore, content_type: str,
                                     suffix: str) -> None:
    name = store.put(PNG, content_type)

    assert name.endswith(suffix)
    assert store.path_of(name) is not None


def test_image_names_are_unguessable(store: LocalImageStore) -> None:
    names = {store.put(PNG, "image/png") for _ in range(20)}

    assert len(names) == 20
    # At least 128 random bits each: 22+ URL-safe characters after the prefix.
    assert all(re.fullmatch(r"img_[A-Za-z0-9_-]{22,}\.png", name) for name in names)


def test_put_leaves_no_partial_file(store: LocalImageStore) -> None:
    name = store.put(PNG, "image/png")

    assert sorted(p.name for p in store.directory.iterdir()) == [name]


def test_unknown_name_is_not_found(store: LocalImageStore) -> None:
    assert store.path_of(NAME) is None


@pytest.mark.parametrize(
    "name",
    [
        "../outside.png",
        "../../etc/passwd",
        "img_../../outside.png",
        "/etc/passwd",
        "..",
        "",
        SECRET_FILE,
        "img_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA.png/../../outside.png",
    ],
)
def test_names_outside_the_store_are_refused(
    store: LocalImageStore, tmp_path: Path, name: str
) -> None:
    (tmp_path / "outside.png").write_bytes(PNG)
    (store.directory / SECRET_FILE).write_bytes(SECRET)

    assert store.path_of(name) is None


def test_sweep_deletes_only_expired_images(store: LocalImageStore) -> None:
    old, fresh = store.put(PNG, "image/png"), store.put(PNG, "image/png")
    age(store.directory / old, TTL + 1)
    age(store.directory / fresh, TTL - 1)

    removed = store.sweep(NOW)

    assert removed == 1
    assert store.path_of(old) is None
    assert store.path_of(fresh) is not None


def test_sweep_deletes_stale_partial_writes_only(store: LocalImageStore) -> None:
    stale = store.directory / f".{NAME}.part"
    writing = store.directory / ".img_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB.png.part"
    stale.write_bytes(b"half")
    writing.write_bytes(b"half")
    age(stale, TTL + 1)
    age(writing, 1)

    assert store.sweep(NOW) == 1
    assert not stale.exists()
    assert writing.exists()


def test_sweep_leaves_files_that_are_not_images(store: LocalImageStore) -> None:
    keep = [store.directory / SECRET_FILE, store.directory / "notes.txt"]
    for path in keep:
        path.write_bytes(b"keep me")
        age(path, TTL * 10)

    assert store.sweep(NOW) == 0
    assert all(path.exists() for path in keep)


def test_sweep_leaves_the_signing_key_it_shares_a_folder_with(tmp_path: Path) -> None:
    secret = load_or_create_secret(tmp_path)
    store = make_store(tmp_path)
    age(tmp_path / SECRET_FILE, TTL * 10)

    store.sweep(NOW)

    assert load_or_create_secret(tmp_path) == secret


def test_a_link_opens_its_file_until_it_expires(store: LocalImageStore) -> None:
    key = store.put(PNG, "image/png")
    _, expires, sig = link_params(store.link(key, base_url="http://h", now=NOW))

    opened = store.open(key, expires, sig, NOW + 1)

    assert opened.path.read_bytes() == PNG
    assert (opened.content_type, opened.expires) == ("image/png", int(NOW) + TTL)
    with pytest.raises(LinkExpired):
        store.open(key, expires, sig, NOW + TTL + 1)


def test_a_valid_link_to_a_swept_image_is_gone(store: LocalImageStore) -> None:
    key = store.put(PNG, "image/png")
    _, expires, sig = link_params(store.link(key, base_url="http://h", now=NOW))
    store.path_of(key).unlink()  # type: ignore[union-attr]

    with pytest.raises(ImageGone):
        store.open(key, expires, sig, NOW)


def test_a_store_refuses_types_it_cannot_serve(store: LocalImageStore) -> None:
    with pytest.raises(ValueError, match="text/html"):
        store.put(b"<html>", "text/html")
