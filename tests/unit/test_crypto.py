"""Token encryption (contract §4): the seed's `iv:authTag:ciphertext` format, Node compatibility,
and refusal of anything tampered with, without ever echoing the plaintext."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from stream_app.crypto import TokenCipher, generate_key
from stream_app.errors import ConfigurationError, DecryptionError

REPO = Path(__file__).resolve().parents[2]
NODE_SCRIPT = REPO / "scripts" / "node_vectors.js"
NODE_FIXTURE = REPO / "tests" / "fixtures" / "node_vectors.json"

SECRET = "sbx_rt_super-secret-refresh-token-0123456789"
SEED_FORMAT = re.compile(r"^(?P<iv>[0-9a-f]{24}):(?P<tag>[0-9a-f]{32}):(?P<ct>(?:[0-9a-f]{2})*)$")


@pytest.fixture
def cipher(encryption_key: str) -> TokenCipher:
    return TokenCipher(encryption_key)


def _flip_hex_bit(hex_text: str, index: int) -> str:
    """The same hex string with the lowest bit of the ``index``-th hex digit flipped."""
    flipped = format(int(hex_text[index], 16) ^ 1, "x")
    return hex_text[:index] + flipped + hex_text[index + 1 :]


def _replace_part(stored: str, which: int, new: str) -> str:
    parts = stored.split(":")
    parts[which] = new
    return ":".join(parts)


# --- encryption ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    ["", "a", SECRET, "jeton-été ☃ 令牌 🔑", "x" * 10_000, "colons:inside:the:token"],
    ids=["empty", "one-char", "token", "unicode", "long", "colons"],
)
def test_round_trip(cipher: TokenCipher, plaintext: str) -> None:
    assert cipher.decrypt(cipher.encrypt(plaintext)) == plaintext


def test_ciphertext_is_seed_format_with_12_byte_iv(cipher: TokenCipher) -> None:
    stored = cipher.encrypt(SECRET)

    match = SEED_FORMAT.fullmatch(stored)
    assert match, stored
    assert len(bytes.fromhex(match["iv"])) == 12
    assert len(bytes.fromhex(match["tag"])) == 16
    # GCM is a stream mode: ciphertext is exactly as long as the UTF-8 plaintext.
    assert len(bytes.fromhex(match["ct"])) == len(SECRET.encode())
    assert SECRET not in stored
    assert SECRET.encode().hex() not in stored


def test_two_encryptions_of_one_token_differ(cipher: TokenCipher) -> None:
    first, second = cipher.encrypt(SECRET), cipher.encrypt(SECRET)

    assert first != second
    assert first.split(":")[0] != second.split(":")[0]  # a fresh IV each time
    assert cipher.decrypt(first) == cipher.decrypt(second) == SECRET


def test_ciphertext_is_readable_by_plain_aes_gcm(encryption_key: str, cipher: TokenCipher) -> None:
    """What Python writes, any AES-256-GCM implementation (Node's included) can read."""
    iv, tag, ciphertext = (bytes.fromhex(part) for part in cipher.encrypt(SECRET).split(":"))

    assert AESGCM(bytes.fromhex(encryption_key)).decrypt(iv, ciphertext + tag, None) == SECRET.encode()


@pytest.mark.parametrize(
    "key",
    ["", "abc", "00" * 31, "00" * 33, "zz" * 32],
    ids=["empty", "short", "31-bytes", "33-bytes", "non-hex"],
)
def test_cipher_refuses_a_key_that_is_not_32_hex_bytes(key: str) -> None:
    with pytest.raises(ConfigurationError, match="ENCRYPTION_KEY"):
        TokenCipher(key)


def test_generate_key_is_64_lower_hex_and_random() -> None:
    keys = {generate_key() for _ in range(5)}

    assert len(keys) == 5
    assert all(re.fullmatch(r"[0-9a-f]{64}", key) for key in keys)


# --- Node compatibility -------------------------------------------------------------------


def _assert_vectors_decrypt(document: dict[str, Any]) -> None:
    cipher = TokenCipher(document["test_only_key"])
    vectors = document["vectors"]
    assert {vector["iv_bytes"] for vector in vectors} == {12, 16}
    for vector in vectors:
        iv_hex = vector["ciphertext"].split(":")[0]
        assert len(iv_hex) == 2 * vector["iv_bytes"], vector["name"]
        assert cipher.decrypt(vector["ciphertext"]) == vector["plaintext"], (
            vector["name"],
            vector["iv_bytes"],
        )


def test_committed_node_vectors_decrypt() -> None:
    document = json.loads(NODE_FIXTURE.read_text(encoding="utf-8"))

    assert {vector["name"] for vector in document["vectors"]} >= {
        "empty",
        "unicode",
        "long",
    }
    _assert_vectors_decrypt(document)


def test_committed_node_vectors_need_their_key() -> None:
    document = json.loads(NODE_FIXTURE.read_text(encoding="utf-8"))
    other = TokenCipher(generate_key())

    for vector in document["vectors"]:
        with pytest.raises(DecryptionError):
            other.decrypt(vector["ciphertext"])


def test_live_node_vectors_decrypt(encryption_key: str) -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("node is not installed, but CI=true: the Node compatibility check must run on CI")
        pytest.skip("node is not installed (set CI=true to make this a failure)")

    completed = subprocess.run(
        [node, str(NODE_SCRIPT), encryption_key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["test_only_key"] == encryption_key
    _assert_vectors_decrypt(document)


# --- refusal ------------------------------------------------------------------------------


def _tamper_ciphertext(stored: str) -> str:
    return _replace_part(stored, 2, _flip_hex_bit(stored.split(":")[2], 0))


def _tamper_tag(stored: str) -> str:
    return _replace_part(stored, 1, _flip_hex_bit(stored.split(":")[1], 31))


def _tamper_iv(stored: str) -> str:
    return _replace_part(stored, 0, _flip_hex_bit(stored.split(":")[0], 5))


def _truncate_ciphertext_byte(stored: str) -> str:
    return stored[:-2]


def _truncate_hex_digit(stored: str) -> str:
    return stored[:-1]


def _truncate_tag(stored: str) -> str:
    return _replace_part(stored, 1, stored.split(":")[1][:-2])


def _drop_ciphertext(stored: str) -> str:
    return stored.rsplit(":", 1)[0]


def _extra_part(stored: str) -> str:
    return stored + ":00"


def _non_hex(stored: str) -> str:
    return _replace_part(stored, 2, "zz" + stored.split(":")[2][2:])


def _upper_case_o_for_zero(stored: str) -> str:
    return _replace_part(stored, 0, "O" + stored.split(":")[0][1:])


def _eight_byte_iv(stored: str) -> str:
    return _replace_part(stored, 0, stored.split(":")[0][:16])


def _twenty_byte_iv(stored: str) -> str:
    return _replace_part(stored, 0, stored.split(":")[0] + "00" * 8)


def _plaintext_itself(stored: str) -> str:
    return SECRET


def _empty(stored: str) -> str:
    return ""


TAMPERINGS = [
    _tamper_ciphertext,
    _tamper_tag,
    _tamper_iv,
    _truncate_ciphertext_byte,
    _truncate_hex_digit,
    _truncate_tag,
    _drop_ciphertext,
    _extra_part,
    _non_hex,
    _upper_case_o_for_zero,
    _eight_byte_iv,
    _twenty_byte_iv,
    _plaintext_itself,
    _empty,
]


@pytest.mark.parametrize("tamper", TAMPERINGS, ids=lambda f: f.__name__.lstrip("_"))
def test_tampered_ciphertext_is_refused_without_leaking_plaintext(cipher: TokenCipher, tamper: Any) -> None:
    stored = cipher.encrypt(SECRET)
    tampered = tamper(stored)
    assert tampered != stored

    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(tampered)

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


def test_wrong_key_is_refused_without_leaking_plaintext(cipher: TokenCipher) -> None:
    stored = cipher.encrypt(SECRET)

    with pytest.raises(DecryptionError) as caught:
        TokenCipher(generate_key()).decrypt(stored)

    assert SECRET not in str(caught.value)
    assert cipher.decrypt(stored) == SECRET


def test_genuine_8_byte_iv_ciphertext_is_refused(encryption_key: str, cipher: TokenCipher) -> None:
    """An authentic GCM ciphertext under a 64-bit IV: only the IV-length rule refuses it."""
    iv = os.urandom(8)
    sealed = AESGCM(bytes.fromhex(encryption_key)).encrypt(iv, SECRET.encode(), None)
    stored = f"{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"

    with pytest.raises(DecryptionError, match="IV"):
        cipher.decrypt(stored)


@pytest.mark.parametrize("iv_bytes", [12, 16])
def test_genuine_ciphertext_of_non_utf8_bytes_is_refused(
    encryption_key: str, cipher: TokenCipher, iv_bytes: int
) -> None:
    iv = os.urandom(iv_bytes)
    sealed = AESGCM(bytes.fromhex(encryption_key)).encrypt(iv, b"\xff\xfe not utf-8", None)
    stored = f"{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"

    with pytest.raises(DecryptionError, match="UTF-8"):
        cipher.decrypt(stored)


def test_a_token_with_a_lone_surrogate_survives_the_round_trip(cipher: TokenCipher) -> None:
    # json.loads('"\\ud800"') gives such a string; a rotated token must be stored, not lost.
    token = "sbx_rt_" + "\ud800" + "tail"
    assert cipher.decrypt(cipher.encrypt(token)) == token
