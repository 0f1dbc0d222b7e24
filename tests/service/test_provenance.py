"""Content provenance's parts: the watermark, the signing identity, the signed manifest
and the check's reading of it (c2pa-python validates every file)."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuserve.protocol.uploads import Upload, probe_image
from diffuserve.service import watermark
from diffuserve.service.checks import read_manifest, reading_settings
from diffuserve.service.credentials import (
    IDENTITY_FILE,
    IdentityUnusable,
    SigningIdentity,
    identity_from_pem,
    kept_identity,
    self_signed_pem,
)
from diffuserve.service.provenance import EDITED, GENERATED, Marking, Provenance
from tests.support.provenance import (
    actions_of,
    encoded,
    manifest_report,
    photo_like,
    reencoded,
    tampered_jpeg,
)

WHEN = 1_790_000_000.0  # 2026-09-21T14:13:20Z


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> SigningIdentity:
    made = kept_identity(tmp_path_factory.mktemp("identity"), create=True)
    assert made is not None
    return made


@pytest.fixture(scope="module")
def marker(identity: SigningIdentity) -> Provenance:
    return Provenance(identity)


def _decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


# --- the watermark -----------------------------------------------------------------------


def test_the_watermark_survives_stripping_and_jpeg_85_on_a_photo() -> None:
    payload = watermark.payload_for(b"server key")
    picture = photo_like(512, 384, seed=3)
    marked = watermark.embed(picture, payload)

    changed = np.abs(np.asarray(marked, int) - np.asarray(picture, int))
    assert 0 < changed.mean() < 2 and changed.max() <= 16  # invisible, but there
    assert watermark.read(marked, payload).bit_errors == 0
    assert watermark.read(_decoded(reencoded(encoded(marked, "png"))), payload).detected
    assert not watermark.read(picture, payload).detected
    # Another server's mark is not this one's.
    assert not watermark.read(marked, watermark.payload_for(b"other key")).detected


def test_flat_artwork_keeps_the_watermark_through_jpeg_85() -> None:
    payload = watermark.payload_for(b"server key")
    art = Image.new("RGB", (256, 256), "white")
    art.paste((250, 200, 40), (64, 64, 192, 192))
    marked = watermark.embed(art, payload)

    assert watermark.read(_decoded(reencoded(encoded(marked, "png"))), payload).detected
    assert not watermark.read(art, payload).detected  # white reads one bit everywhere


def test_the_watermark_keeps_alpha_and_skips_pictures_too_small_to_carry_it() -> None:
    payload = watermark.payload_for(b"server key")
    rgba = photo_like(256, 256).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 77))
    marked = watermark.embed(rgba, payload)
    assert marked.mode == "RGBA" and (np.asarray(marked)[..., 3] == 77).all()
    assert watermark.read(marked, payload).detected

    small = photo_like(120, 120)
    assert watermark.embed(small, payload) is small
    assert watermark.read(small, payload).bit_errors is None


def test_payloads_are_balanced_so_no_flat_picture_comes_near_one() -> None:
    for key in (b"a", b"b", b"c", b"d"):
        ones = int(watermark.payload_for(key).sum())
        assert watermark.BALANCE[0] <= ones <= watermark.BALANCE[1]


# --- the signing identity ----------------------------------------------------------------


def test_the_kept_identity_is_made_once_for_its_owner_only(tmp_path: Path) -> None:
    assert kept_identity(tmp_path, create=False) is None
    first = kept_identity(tmp_path, create=True)
    again = kept_identity(tmp_path, create=True)

    assert first is not None and again == first
    assert stat.S_IMODE((tmp_path / IDENTITY_FILE).stat().st_mode) == 0o600
    assert (first.algorithm, first.issuer) == ("es256", "diffuserve (self-signed)")


def test_a_key_that_is_not_the_signers_is_refused() -> None:
    ours, theirs = self_signed_pem(), self_signed_pem()
    chain = ours[ours.index(b"-----BEGIN CERTIFICATE-----"):]
    key = theirs[:theirs.index(b"-----BEGIN CERTIFICATE-----")]
    with pytest.raises(IdentityUnusable, match="not the key of the first certificate"):
        identity_from_pem(chain, key, "the test's files")
    with pytest.raises(IdentityUnusable, match="cannot be read"):
        identity_from_pem(b"not a certificate", key, "the test's files")


# --- the manifest, and a check's reading of it ----------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_generation_is_signed_as_created_by_its_model(marker: Provenance, fmt: str) -> None:
    data = marker.sign(encoded(photo_like(256, 256), fmt), fmt, Marking("emoji", WHEN))

    state, manifest = manifest_report(data, fmt)
    (action,) = actions_of(manifest)
    assert state == "Valid"
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", GENERATED)
    assert action["softwareAgent"]["name"] == "emoji"
    assert action["when"] == "2026-09-21T14:13:20Z"
    assert manifest["claim_generator_info"][0]["name"] == "diffuserve"
    assert "thumbnail" not in manifest
    # The pixels are the encoder's, untouched.
    assert np.array_equal(np.asarray(_decoded(data)),
                          np.asarray(_decoded(encoded(photo_like(256, 256), fmt))))


def test_an_edit_is_signed_as_edited_from_its_inputs(marker: Provenance) -> None:
    first = marker.sign(encoded(photo_like(256, 256), "png"), "png", Marking("emoji", WHEN))
    inputs = tuple(probe_image(Upload(f"{i}", "", data), "image[]",
                               formats=("png", "jpeg", "webp"), max_bytes=1 << 26)
                   for i, data in enumerate((first, encoded(photo_like(64, 64), "jpeg"))))
    data = marker.sign(encoded(photo_like(256, 256, 1), "jpeg"), "jpeg",
                       Marking("emoji", WHEN, edited=True, inputs=inputs))

    state, manifest = manifest_report(data, "jpeg")
    assert state == "Valid"
    assert [a["action"] for a in actions_of(manifest)] == ["c2pa.opened", "c2pa.edited"]
    assert actions_of(manifest)[1]["digitalSourceType"] == EDITED
    parent, component = manifest["ingredients"]
    assert (parent["relationship"], component["relationship"]) == ("parentOf", "componentOf")
    assert parent.get("active_manifest")  # the input's own manifest, carried along


def test_a_check_reads_valid_trusted_invalid_and_absent(
        marker: Provenance, identity: SigningIdentity) -> None:
    data = marker.sign(encoded(photo_like(256, 256), "jpeg"), "jpeg", Marking("emoji", WHEN))
    root = identity.chain_pem[identity.chain_pem.rindex(b"-----BEGIN CERTIFICATE-----"):]

    valid = read_manifest(data, "jpeg", reading_settings(None))
    assert (valid.outcome, valid.validation_state) == ("detected", "valid")
    assert (valid.issuer, valid.model, valid.generated_at) == (
        "diffuserve (self-signed)", "emoji", "2026-09-21T14:13:20Z")
    trusted = read_manifest(data, "jpeg", reading_settings(root))
    assert (trusted.outcome, trusted.validation_state) == ("detected", "trusted")
    other_root = self_signed_pem()
    other = other_root[other_root.rindex(b"-----BEGIN CERTIFICATE-----"):]
    assert read_manifest(data, "jpeg", reading_settings(other)).validation_state == "valid"

    tampered = read_manifest(tampered_jpeg(data), "jpeg", reading_settings(None))
    assert (tampered.outcome, tampered.validation_state, tampered.model) == (
        "not_detected", "invalid", None)
    stripped = read_manifest(reencoded(data), "jpeg", reading_settings(None))
    assert (stripped.outcome, stripped.validation_state) == ("not_detected", "not_present")


def test_signing_adds_a_manifest_of_a_few_kilobytes_and_no_thumbnail(
        marker: Provenance) -> None:
    # A thumbnail would add hundreds of KB and tens of ms an image; what signing costs
    # in time is measured by benchmarks/provenance.py, not asserted on a shared machine.
    data = encoded(photo_like(512, 512), "jpeg")
    signed = marker.sign(data, "jpeg", Marking("emoji", WHEN))
    assert 0 < len(signed) - len(data) < 8_000
