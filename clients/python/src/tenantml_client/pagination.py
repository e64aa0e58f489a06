"""Lists that read the API's pages lazily: ``{"count", "next", "previous", "results"}`` pages of
``?limit=&offset=``, followed through ``next`` only as far as the caller iterates."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, urlsplit

T = TypeVar("T")

PageFetcher = Callable[[dict[str, Any]], dict[str, Any]]


class Pages(Generic[T]):
    """An iterable over every item of a list, one page request at a time.

    ``count`` is the list's length as the platform reports it (from the first page). Iterating
    again starts again from the first page, so it sees the list as it is then.
    """

    def __init__(
        self,
        fetch: PageFetcher,
        build: Callable[[dict[str, Any]], T],
        *,
        params: dict[str, Any],
        keep: Callable[[T], bool] | None = None,
    ) -> None:
        self._fetch = fetch
        self._build = build
        self._params = params
        self._keep = keep
        self._first: dict[str, Any] | None = None

    @property
    def count(self) -> int:
        """How many items the platform says the list holds."""
        return int(self._first_page()["count"])

    def __iter__(self) -> Iterator[T]:
        page = self._first_page()
        self._first = None  # a second iteration reads the list afresh
        while True:
            for item in page["results"]:
                built = self._build(item)
                if self._keep is None or self._keep(built):
                    yield built
            following = page.get("next")
            if not following or not page["results"]:
                return
            # Only the query of ``next`` is used: its host is the one the platform saw, which
            # behind a proxy may not be the one this client reaches it by.
            page = self._fetch(dict(parse_qsl(urlsplit(following).query)))

    def _first_page(self) -> dict[str, Any]:
        if self._first is None:
            self._first = self._fetch(dict(self._params))
        return self._first
