"""Admin list pages over big tables: a paginator that never counts millions of rows, and filters.

The delivery log grows by one row per user per channel per notification, so an exact
COUNT(*) on every page view (Django's default, twice with show_full_result_count) costs more
than the page itself. Unfiltered, the count is PostgreSQL's own estimate (pg_class.reltuples,
kept by autovacuum/ANALYZE); filtered, rows are counted up to COUNT_CAP and the page says
"more than" past it. Filters here take their values from the query string without extra
queries and without facet counts.
"""

from datetime import datetime, time, timedelta

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.paginator import Paginator
from django.db import connections
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.functional import cached_property

# Filtered lists count at most this many rows; beyond it the list says "more than 10,000".
COUNT_CAP = 10_000
# Below this many rows the table is small enough that an exact count is cheaper than a wrong one.
ESTIMATE_MIN_ROWS = 50_000


class EstimatedCountPaginator(Paginator):
    """Exact counts only where they are cheap; `count_is_estimate` / `count_is_capped` say when not."""

    count_is_estimate = False
    count_is_capped = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not queryset.query.where:
            estimate = table_row_estimate(queryset)
            if estimate is not None and estimate >= ESTIMATE_MIN_ROWS:
                self.count_is_estimate = True
                return estimate
        counted = queryset.order_by()[: COUNT_CAP + 1].count()
        if counted > COUNT_CAP:
            self.count_is_capped = True
            return COUNT_CAP
        return counted


def table_row_estimate(queryset) -> int | None:
    """PostgreSQL's row estimate for the queryset's table, or None where there is none."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    # -1 means "never vacuumed or analysed" (PostgreSQL 14+).
    return row[0] if row and row[0] >= 0 else None


class _ValueFilter(admin.ListFilter):
    """A filter read from the query string (no lookups queried); subclasses say how to apply it."""

    parameters: tuple[str, ...] = ()

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                value = params.pop(name)
                value = value[-1] if isinstance(value, list) else value
                if value.strip():
                    self.used_parameters[name] = value.strip()

    def expected_parameters(self):
        return list(self.parameters)

    def value(self, name: str) -> str:
        return self.used_parameters.get(name, "")

    def hidden_params(self, changelist) -> list[tuple[str, str]]:
        """The list's other parameters, carried through this filter's GET form."""
        return [
            (name, value)
            for name, value in changelist.params.items()
            if name not in self.parameters and name != "p"
        ]


class IdFilter(_ValueFilter):
    """Rows of one related object (`?notification=12`), as linked from its page; shown when set."""

    field_name = ""
    template = "admin/clarion/id_filter.html"

    @property
    def parameters(self):
        return (self.field_name,)

    def has_output(self) -> bool:
        return bool(self.value(self.field_name))

    def queryset(self, request, queryset):
        raw = self.value(self.field_name)
        if not raw:
            return queryset
        if not raw.isdigit():
            raise IncorrectLookupParameters(f"{self.field_name} must be an id")
        return queryset.filter(**{f"{self.field_name}_id": int(raw)})

    def choices(self, changelist):
        yield {
            "selected": True,
            "display": f"#{self.value(self.field_name)}",
            "clear_query_string": changelist.get_query_string(remove=[self.field_name]),
        }


class TextContainsFilter(_ValueFilter):
    """A text box: rows whose `field_name` contains the text (case-insensitive)."""

    field_name = ""
    template = "admin/clarion/text_filter.html"

    @property
    def parameters(self):
        return (f"{self.field_name}_contains",)

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        text = self.value(self.parameters[0])
        return queryset.filter(**{f"{self.field_name}__icontains": text}) if text else queryset

    def choices(self, changelist):
        yield {
            "name": self.parameters[0],
            "value": self.value(self.parameters[0]),
            "hidden": self.hidden_params(changelist),
            "clear_query_string": changelist.get_query_string(remove=list(self.parameters)),
        }


class DateTimeRangeFilter(_ValueFilter):
    """From/to on a datetime column (dates or date-times, UTC), plus quick recent ranges."""

    field_name = "created_at"
    template = "admin/clarion/date_range_filter.html"
    quick_ranges = (
        ("Last hour", timedelta(hours=1)),
        ("Last 24 hours", timedelta(days=1)),
        ("Last 7 days", timedelta(days=7)),
    )

    @property
    def parameters(self):
        return (f"{self.field_name}_from", f"{self.field_name}_to")

    def has_output(self) -> bool:
        return True

    def queryset(self, request, queryset):
        start, end = (self.value(name) for name in self.parameters)
        if start:
            queryset = queryset.filter(**{f"{self.field_name}__gte": parse_moment(start, end_of_day=False)})
        if end:
            queryset = queryset.filter(**{f"{self.field_name}__lt": parse_moment(end, end_of_day=True)})
        return queryset

    def choices(self, changelist):
        now = timezone.now().replace(second=0, microsecond=0)
        start_name, end_name = self.parameters
        yield {
            "start_name": start_name,
            "end_name": end_name,
            "start": self.value(start_name),
            "end": self.value(end_name),
            "hidden": self.hidden_params(changelist),
            "clear_query_string": changelist.get_query_string(remove=list(self.parameters)),
            "quick": [
                (
                    label,
                    changelist.get_query_string(
                        {start_name: (now - span).strftime("%Y-%m-%dT%H:%M")}, remove=[end_name]
                    ),
                )
                for label, span in self.quick_ranges
            ],
        }


def parse_moment(raw: str, *, end_of_day: bool) -> datetime:
    """A date or date-time from a filter box, in the current time zone; a bare `to` date includes that day."""
    try:
        day = parse_date(raw)  # first: parse_datetime also accepts a bare date, as midnight
        moment = None if day else parse_datetime(raw.replace(" ", "T"))
    except ValueError:
        moment = day = None
    if moment is None and day is None:
        raise IncorrectLookupParameters(f"not a date: {raw!r}")
    if moment is None:
        moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment
