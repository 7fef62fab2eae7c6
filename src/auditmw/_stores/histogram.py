"""Activity over time: how many events match a filter, per interval of a "nice" width.

``AuditStore.histogram(filter, buckets=60)`` answers with a ``Histogram``:

- its range is the filter's ``since`` and ``until`` (``from``/``to``) when they are set,
  else from the first matching event to the last, to whole intervals;
- the width of its intervals is the narrowest of ``STEPS`` (1 ms, 2 ms, 5 ms ... 1 s, 2 s,
  5 s, 10 s, 15 s, 30 s, 1 min ... 30 min, 1 h, 2 h, 3 h, 6 h, 12 h, 1 day, 2, 5, 10, 20,
  50 days ...) that covers the range in at most ``buckets`` intervals;
- intervals start at whole multiples of the width counted from 1970-01-01T00:00:00Z, so
  they read well (a 5-minute interval starts at :00, :05 ...; a day at midnight UTC); only
  ``since`` and ``until`` cut the first and the last one short;
- the store counts the events per interval in the database (``_interval_counts``). The
  intervals cut the whole time line (the first takes everything earlier, the last
  everything later), so the counts add up to exactly the events ``query`` returns for
  the same filter, whatever the clock wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from auditmw._errors import StoreError
from auditmw._stores.filters import TIMESTAMP, format_timestamp

DEFAULT_BUCKETS = 60  # intervals wanted, when not given
MAX_BUCKETS = 500
MILLISECOND = 1_000  # the unit here is the microsecond, the log's resolution
SECOND = 1_000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
# Interval widths that read well, narrowest first (beyond a day: 1, 2, 5 x 10^k days).
STEPS = (
    *(n * MILLISECOND for n in (1, 2, 5, 10, 20, 50, 100, 200, 500)),
    *(n * SECOND for n in (1, 2, 5, 10, 15, 30)),
    *(n * MINUTE for n in (1, 2, 5, 10, 15, 30)),
    *(n * HOUR for n in (1, 2, 3, 6, 12)),
    *(n * 10**k * DAY for k in range(7) for n in (1, 2, 5)),
)
# Below and above every timestamp (they all start with a digit; text compares bytewise):
# the outer bounds of the first and last intervals, which take every earlier or later event.
BEFORE_ANY, AFTER_ANY = "", "~"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = -62_135_596_800 * SECOND  # 0001-01-01T00:00:00.000000Z
_LATEST = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z


def microseconds(timestamp: str) -> int:
    """A log timestamp (RFC 3339, UTC, ``Z``) as microseconds since 1970-01-01T00:00:00Z."""
    if not TIMESTAMP.match(timestamp):
        raise ValueError(f"not a log timestamp: {timestamp[:40]!r}")
    moment = datetime.fromisoformat(timestamp)
    return (moment - _EPOCH) // timedelta(microseconds=1)


def timestamp(micros: int) -> str:
    """Microseconds since 1970-01-01T00:00:00Z as a log timestamp, kept within the years
    1 to 9999 that the format can write."""
    micros = min(max(micros, _EARLIEST), _LATEST)
    return format_timestamp(_EPOCH + timedelta(microseconds=micros))


@dataclass(frozen=True, slots=True)
class HistogramBucket:
    """``count`` events matched the filter from ``start`` (inclusive) to ``end``
    (exclusive): RFC 3339 timestamps, UTC."""

    start: str
    end: str
    count: int


@dataclass(frozen=True, slots=True)
class Histogram:
    """Events matching a filter per interval of time, oldest interval first.

    ``start``/``end`` are the range the buckets cover (None when no event matched and the
    filter did not bound the range), ``bucket_ms`` the intervals' width in milliseconds
    (the first and last may be cut shorter at the range's ends).
    """

    start: str | None
    end: str | None
    bucket_ms: int | None
    buckets: tuple[HistogramBucket, ...]

    @property
    def total(self) -> int:
        """How many events matched: the sum of the counts."""
        return sum(bucket.count for bucket in self.buckets)

    def to_dict(self) -> dict[str, Any]:
        """The histogram as the admin app's ``/histogram`` returns it."""
        return {
            "from": self.start,
            "to": self.end,
            "bucket_ms": self.bucket_ms,
            "total": self.total,
            "buckets": [
                {"start": bucket.start, "end": bucket.end, "count": bucket.count}
                for bucket in self.buckets
            ],
        }


@dataclass(frozen=True, slots=True)
class BucketLayout:
    """``count`` intervals of ``step`` microseconds from ``origin`` (a multiple of
    ``step``), the first cut to begin at ``start`` and the last to end at ``end``."""

    start: int
    end: int
    origin: int
    step: int
    count: int

    @classmethod
    def over(
        cls, since: str | None, until: str | None, span: tuple[str, str] | None, buckets: int
    ) -> BucketLayout | None:
        """At most ``buckets`` intervals from ``since`` until ``until``; where one is None,
        over the ``span`` (first, last) of the matching events' timestamps, to whole
        intervals. None when that is needed and no event matched."""
        try:
            if since is not None and until is not None:
                return cls.covering(microseconds(since), microseconds(until), buckets)
            if span is None:
                return None
            first = microseconds(since if since is not None else span[0])
            stop = microseconds(until) if until is not None else microseconds(span[1]) + 1
        except ValueError as exc:  # a timestamp written behind the store's back
            raise StoreError(f"cannot lay out a histogram: {exc}") from exc
        layout = cls.covering(first, stop, buckets)
        # Open ends are not cut: the first and last intervals are whole ones.
        start = first if since is not None else layout.origin
        end = stop if until is not None else layout.origin + layout.count * layout.step
        return dataclasses.replace(layout, start=start, end=end)

    @classmethod
    def covering(cls, first: int, stop: int, buckets: int) -> BucketLayout:
        """At most ``buckets`` intervals over ``[first, stop)`` (microseconds)."""
        if stop <= first or buckets < 1:
            raise ValueError("a histogram needs first < stop and at least one bucket")
        for step in STEPS:
            origin = first // step * step
            count = -(-(stop - origin) // step)  # ceiling division
            if count <= buckets:
                return cls(first, stop, origin, step, count)
        # A range of thousands of years across 1970: equal whole milliseconds from first.
        step = -(-(stop - first) // (buckets * MILLISECOND)) * MILLISECOND
        return cls(first, stop, first, step, -(-(stop - first) // step))

    def boundary(self, index: int) -> int:
        """Where interval ``index`` begins (the range's start for the first, its end
        after the last)."""
        return min(max(self.origin + index * self.step, self.start), self.end)

    @property
    def edges(self) -> list[str]:
        """The ``count - 1`` timestamps between the intervals, in order: interval ``k``
        holds the events from ``edges[k - 1]`` (all earlier ones for the first) until
        ``edges[k]`` (all later ones for the last)."""
        return [timestamp(self.boundary(index)) for index in range(1, self.count)]

    def histogram(self, counts: Sequence[int]) -> Histogram:
        """The histogram of these intervals holding ``counts`` events."""
        if len(counts) != self.count:
            raise ValueError(f"expected {self.count} counts, got {len(counts)}")
        bounds = [timestamp(self.boundary(index)) for index in range(self.count + 1)]
        return Histogram(
            start=bounds[0],
            end=bounds[-1],
            bucket_ms=self.step // MILLISECOND,
            buckets=tuple(
                HistogramBucket(bounds[index], bounds[index + 1], count)
                for index, count in enumerate(counts)
            ),
        )
