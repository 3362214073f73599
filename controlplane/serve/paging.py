"""Paged answers of the read API: every page of one listing from one snapshot, each page bounded in bytes.

A graph or a service list can hold thousands of items with names up to the model's name cap; one answer
with all of them could pass what a gRPC client accepts (4 MiB by default). So `GetGraph` and
`GetServiceStats` answer in pages: as many items as `page_size` asks, but never much more than
`MAX_PAGE_BYTES`, and at least one. The first page takes a snapshot and keeps it (`Listings`) for the
pages after it, so a listing is consistent even while ingest goes on; the page token names that snapshot
and the offset. A token past its listing's life (`LISTING_SECONDS`) or not made here is refused.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from google.protobuf.message import Message

T = TypeVar("T")
M = TypeVar("M", bound=Message)

MAX_PAGE_BYTES = 1024 * 1024
MAX_PAGE_ITEMS = 10_000
LISTING_SECONDS = 60.0
LISTINGS_KEPT = 16


class BadPageToken(ValueError):
    """A page token that is malformed, from another server, or whose listing has expired."""


class Listings(Generic[T]):
    """Snapshots of listings in progress, by id, for `LISTING_SECONDS` and at most `LISTINGS_KEPT`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = itertools.count(1)
        self._kept: OrderedDict[int, tuple[float, T]] = OrderedDict()

    def resolve(self, token: str, take: Callable[[], T]) -> tuple[int, T, int]:
        """(listing id, snapshot, offset) for `token`; an empty token starts a listing with `take()`."""
        now = self._clock()
        while self._kept and next(iter(self._kept.values()))[0] < now - LISTING_SECONDS:
            self._kept.popitem(last=False)
        if not token:
            listing = next(self._ids)
            self._kept[listing] = (now, take())
            while len(self._kept) > LISTINGS_KEPT:
                self._kept.popitem(last=False)
            return listing, self._kept[listing][1], 0
        listing_text, _, offset_text = token.partition(".")
        if not (listing_text.isdigit() and offset_text.isdigit()):
            raise BadPageToken(f"page_token: {token[:64]!r} is not a token this server gave")
        listing, offset = int(listing_text), int(offset_text)
        kept = self._kept.get(listing)
        if kept is None:
            raise BadPageToken(
                f"page_token: its listing expired ({LISTING_SECONDS:g} s) or is unknown; start it again"
            )
        return listing, kept[1], offset


def fill_page(
    items: Sequence[T], offset: int, page_size: int, encode: Callable[[T], M], max_bytes: int = MAX_PAGE_BYTES
) -> tuple[list[M], int]:
    """Encode items from `offset` until `page_size` are taken or `max_bytes` would be passed (one at least);
    returns the messages and the offset where the next page starts (len(items) when done)."""
    limit = min(page_size or MAX_PAGE_ITEMS, MAX_PAGE_ITEMS)
    page: list[M] = []
    size = 0
    index = offset
    while index < len(items) and len(page) < limit:
        message = encode(items[index])
        grown = size + message.ByteSize()
        if page and grown > max_bytes:
            break
        page.append(message)
        size = grown
        index += 1
    return page, index


def next_token(listing: int, offset: int, total: int) -> str:
    """The token of the page that starts at `offset`, or "" when the listing is done."""
    return f"{listing}.{offset}" if offset < total else ""
