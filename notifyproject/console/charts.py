"""Server-rendered SVG charts for the admin dashboard: no JavaScript, no CDN, numbers in the markup.

Each chart is a plain <svg> with a <title> per mark, so hovering shows the exact figure and
screen readers have one; the dashboard also prints the numbers beside every chart.
"""

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

CHANNEL_COLOURS = {
    "realtime": "#417690",
    "fcm": "#e0a100",
    "apns": "#6b6b6b",
    "webpush": "#8a3ffc",
}
SINGLE_COLOUR = "#417690"
FAILURE_COLOUR = "#ba2121"


def _num(value: float) -> str:
    """SVG coordinates to a tenth of a pixel (format_html turns arguments into strings first)."""
    return f"{value:.1f}"


def stacked_bars_svg(
    labels: list[str], series: dict[str, list[int]], *, title: str, width: int = 480, height: int = 180
) -> SafeString:
    """Vertical bars, one per label, each stacked from the series (name → values per label)."""
    plot_top, plot_bottom, plot_left = 10, height - 24, 40
    plot_height = plot_bottom - plot_top
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    peak = max(totals, default=0) or 1
    slot = (width - plot_left - 4) / max(len(labels), 1)
    bar_width = max(slot * 0.75, 1)
    marks = []
    for i, label in enumerate(labels):
        x = plot_left + i * slot + (slot - bar_width) / 2
        y = plot_bottom
        for name, values in series.items():
            value = values[i]
            if not value:
                continue
            bar_height = value / peak * plot_height
            y -= bar_height
            marks.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} · {}: {}</title></rect>',
                    _num(x),
                    _num(y),
                    _num(bar_width),
                    _num(bar_height),
                    CHANNEL_COLOURS.get(name, SINGLE_COLOUR),
                    label,
                    name,
                    value,
                )
            )
    tick_every = max(1, len(labels) // 8)
    ticks = format_html_join(
        "",
        '<text x="{}" y="{}" font-size="10" text-anchor="middle" fill="#666">{}</text>',
        (
            (_num(plot_left + i * slot + slot / 2), height - 8, label)
            for i, label in enumerate(labels)
            if i % tick_every == 0 or i == len(labels) - 1
        ),
    )
    axis = format_html(
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#666">{}</text>'
        '<text x="{}" y="{}" font-size="10" text-anchor="end" fill="#666">0</text>',
        plot_left,
        plot_bottom,
        width - 4,
        plot_bottom,
        plot_left - 4,
        plot_top + 8,
        max(totals, default=0),
        plot_left - 4,
        plot_bottom,
    )
    return format_html(
        '<svg class="clarion-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}{}{}</svg>',
        title,
        width,
        height,
        width,
        height,
        title,
        axis,
        mark_safe("".join(marks)),  # every mark was built with format_html
        ticks,
    )


def horizontal_bars_svg(
    rows: list[tuple[str, float | None, str]],
    *,
    title: str,
    maximum: float | None = None,
    colour: str = SINGLE_COLOUR,
    width: int = 480,
    row_height: int = 22,
) -> SafeString:
    """One bar per row of (label, value, caption); the caption is printed at the bar's end."""
    label_width, caption_width = 90, 110
    bar_space = width - label_width - caption_width
    peak = maximum or max((value or 0 for _, value, _ in rows), default=0) or 1
    height = row_height * max(len(rows), 1) + 4
    marks = []
    for i, (label, value, caption) in enumerate(rows):
        y = 2 + i * row_height
        bar_width = (value or 0) / peak * bar_space
        marks.append(
            format_html(
                '<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#333">{}</text>'
                '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}</title></rect>'
                '<text x="{}" y="{}" font-size="11" fill="#333">{}</text>',
                label_width - 6,
                _num(y + row_height * 0.65),
                label,
                label_width,
                y + 3,
                _num(bar_width),
                row_height - 6,
                CHANNEL_COLOURS.get(label, colour) if colour == SINGLE_COLOUR else colour,
                label,
                caption,
                _num(label_width + bar_width + 6),
                _num(y + row_height * 0.65),
                caption,
            )
        )
    return format_html(
        '<svg class="clarion-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}"'
        ' xmlns="http://www.w3.org/2000/svg"><title>{}</title>{}</svg>',
        title,
        width,
        height,
        width,
        height,
        title,
        mark_safe("".join(marks)),  # every mark was built with format_html
    )
