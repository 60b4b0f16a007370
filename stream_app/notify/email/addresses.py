"""Email addresses: read strictly (one address, optionally with a display name), and shown masked.

An address is personal data: nothing the channel logs or raises holds one in full, only
``mask(address)`` ("a***@example.com").
"""

from __future__ import annotations

import re
from email.errors import HeaderParseError
from email.headerregistry import Address

from stream_app.notify.printable import UNPRINTABLE, one_line

_NAMED = re.compile(r"^(?P<name>[^<>]*)<(?P<address>[^<>]+)>$")


class InvalidAddress(ValueError):
    pass


def parse_address(value: str, display_name: str | None = None) -> Address:
    """``value`` as one address: ``user@example.com`` or ``Name <user@example.com>``.

    Raises InvalidAddress (whose text never holds the address) for anything else: a list, an
    address without a domain, whitespace or control characters, a non-ASCII local part (this
    channel does not speak SMTPUTF8)."""
    text = value.strip()
    named = _NAMED.match(text)
    if named:
        text = named.group("address").strip()
        display_name = display_name or named.group("name").strip().strip('"').strip() or None
    if not text or UNPRINTABLE.search(text) or any(c.isspace() for c in text) or text.count("@") != 1:
        raise InvalidAddress("not one email address")
    try:
        address = Address(display_name=clean_display_name(display_name), addr_spec=text)
    except (HeaderParseError, ValueError, IndexError, TypeError) as exc:  # the parser's defects
        raise InvalidAddress("not one email address") from exc
    if not address.username or not address.domain or not address.username.isascii():
        raise InvalidAddress("not one email address")
    return address


def clean_display_name(name: str | None) -> str:
    """A display name fit for a header: control characters (a CR/LF above all) and lone surrogates
    become spaces."""
    if not name:
        return ""
    return one_line(name)[:200]


def mask(address: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: enough to tell which domain refused."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"
