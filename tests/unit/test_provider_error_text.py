"""What a provider's refusal may leave behind (issue 9, item 4): a well-formed code and words of
our own in the exception; its free text only on a DEBUG line, scrubbed of every encoding of
every secret sent (raw, URL-encoded, base64/base64url at any alignment, JSON- and HTML-escaped,
and any run of 8+ characters of one). And hostile numbers (item 6) never raise."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_app.catalog import REFRESHABLE_PLATFORMS, platform
from stream_app.errors import ProviderError, ProviderRateLimited
from stream_app.privacy import Scrubber, sanitize_provider_text
from stream_app.providers.client import _json_or_none, _seconds
from stream_app.providers.dialects import raise_for_answer, retry_after_seconds
from stream_app.sandbox.echo import encodings

TOKEN = "sbx_rt_Echoed-Refresh/Token+0123456789"
SECRET = 'cl1ent s\u00e9cret/=&"\\value'
PAIR = f"my-client:{SECRET}"
SENT = (TOKEN, SECRET, PAIR)
BASIC = "Basic " + base64.b64encode(PAIR.encode()).decode()


def _echo() -> str:
    return " ".join([*(form for secret in SENT for form in encodings(secret)), BASIC])


def _windows(text: str) -> set[str]:
    lowered = text.lower()
    return {lowered[i : i + 8] for i in range(len(lowered) - 7)}


def _leaks(text: str) -> set[str]:
    """8-character runs of ``text`` taken from a secret's encodings (the pair's prefix is the
    public client id, so only the pair's whole encodings count)."""
    forms = [form for secret in (TOKEN, SECRET) for form in encodings(secret)]
    forms += [*encodings(PAIR)[:7], BASIC]
    return _windows(text) & set().union(*(_windows(form) for form in forms if len(form) >= 8))


@given(
    secret=st.text(min_size=8, max_size=48),
    before=st.text(max_size=16),
    after=st.text(max_size=16),
    start=st.integers(0, 48),
    length=st.integers(8, 64),
)
def test_no_run_of_eight_characters_of_any_encoding_survives(
    secret: str, before: str, after: str, start: int, length: int
) -> None:
    scrub = Scrubber([secret])
    for form in encodings(secret):
        piece = form[start : start + length]
        piece = piece if len(piece) >= 8 else form
        cleaned = scrub(before + piece + after)
        assert not (_windows(cleaned) & _windows(piece)), (form, cleaned)


@pytest.mark.parametrize("shift", range(6))
def test_a_secret_inside_a_longer_base64_text_is_found_at_any_alignment(shift: int) -> None:
    blob = base64.b64encode(b"p" * shift + TOKEN.encode() + b"-and more").decode()
    cleaned = sanitize_provider_text(f"header {blob} trailer", SENT)

    visible = cleaned.replace("[redacted]", "").replace("header ", "").replace(" trailer", "")
    assert "[redacted]" in cleaned and len(visible) <= 24, cleaned


def test_the_scrubbed_line_is_short_printable_and_names_no_secret() -> None:
    cleaned = sanitize_provider_text(f"bad\x00 token\n\t{_echo()}" * 3, SENT)

    assert not _leaks(cleaned)
    assert cleaned.isprintable() and len(cleaned) <= 203


# Each dialect's error shape, echoing every secret in its free text, its extra fields and its code.
def _shapes() -> list[Any]:
    echo = _echo()
    shapes = []
    for key in sorted(REFRESHABLE_PLATFORMS):
        shapes += [
            pytest.param(key, 400, {"error": "invalid_grant", "error_description": echo, "x": [echo]}, id=f"{key}-rfc"),
            pytest.param(key, 401, {"error": "invalid_client", "error_description": echo}, id=f"{key}-client"),
            pytest.param(key, 400, {"error": TOKEN.lower()[:40]}, id=f"{key}-token-as-code"),
            pytest.param(key, 400, {"error": echo}, id=f"{key}-echo-as-code"),
            pytest.param(key, 400, {"status": 400, "message": f"Invalid refresh token {echo}"}, id=f"{key}-twitch"),
            pytest.param(key, 200, {"ok": False, "error": TOKEN, "warning": echo}, id=f"{key}-slack"),
            pytest.param(key, 400, {"error": {"message": echo, "status": echo}}, id=f"{key}-api-error"),
            pytest.param(key, 401, None, id=f"{key}-page"),
        ]
    return shapes


@pytest.mark.parametrize(("key", "status", "body"), _shapes())
def test_a_refusal_keeps_a_code_and_our_words_only(
    key: str, status: int, body: Any, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {
        "Content-Type": f"application/x-{TOKEN}",
        "WWW-Authenticate": f'Bearer error_description="{BASIC}"',
        "X-Echo": BASIC,
    }
    with caplog.at_level(logging.DEBUG), pytest.raises(ProviderError) as caught:
        raise_for_answer(
            platform(key).dialect,
            status,
            headers,
            body,
            default_wait=1.0,
            sanitize=lambda text: sanitize_provider_text(text, SENT),
        )
    exc = caught.value
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for text in (str(exc), exc.description, repr(exc), logged):
        assert not _leaks(text), text
    code = exc.description.split(":", 1)[0]
    assert code in ("invalid_grant", "invalid_client", "unknown_error", "unexpected answer", "rate_limit_exceeded")


def test_a_lower_case_token_that_looks_like_a_code_is_not_shown() -> None:
    token = "abcdef0123456789abcdef0123456789"
    with pytest.raises(ProviderError) as caught:
        raise_for_answer(
            "rfc6749",
            400,
            {},
            {"error": token},
            default_wait=1.0,
            sanitize=lambda t: sanitize_provider_text(t, [token]),
        )
    assert caught.value.description.startswith("unknown_error: ")


# --- hostile numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({}, {"retry_after": 10**400}, id="body-int-beyond-float"),
        pytest.param({"Retry-After": "Mon, 01 Jan 2030 00:00:00 +99999999999999999999"}, None, id="zone-overflow"),
        pytest.param({"Retry-After": "Fri, 31 Dec 99999 23:59:59 GMT"}, None, id="year-99999"),
        pytest.param({"Retry-After": "1e400"}, {"retry_after": float("nan")}, id="inf-and-nan"),
        pytest.param({"X-RateLimit-Reset": "-1e400"}, {"retry_after": True}, id="minus-inf-and-bool"),
    ],
)
def test_a_hostile_wait_is_unsaid_or_bounded(headers: dict[str, str], body: Any) -> None:
    wait = retry_after_seconds(headers, body)
    assert wait is None or 0 <= wait <= 3600
    with pytest.raises(ProviderRateLimited) as caught:
        raise_for_answer("rfc6749", 429, headers, body, default_wait=5.0, sanitize=str)
    assert caught.value.retry_after is None or 0 <= caught.value.retry_after <= 3600


def test_an_integer_too_long_for_python_does_not_lose_the_answer() -> None:
    content = b'{"access_token": "a", "refresh_token": "r", "expires_in": 1' + b"0" * 5000 + b"}"

    body = _json_or_none(content)

    assert body is not None and body["refresh_token"] == "r"
    assert _seconds(body["expires_in"], 3600) == 3600
    assert _json_or_none(b'{"expires_in": -1' + b"0" * 5000 + b"}") == {"expires_in": float("-inf")}
