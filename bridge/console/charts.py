"""Small inline SVG charts of a series (`bridge.history`), drawn on the server: no script, and
no inline style (the console's CSP forbids it) — the parts carry classes the stylesheet colours:
spark, spark-axis, spark-line, spark-dot, spark-max, spark-latest, spark-empty."""

from __future__ import annotations

import math
from collections.abc import Sequence

from markupsafe import Markup

TEXT_ROW = 12  # above the plot: the max on the left, the latest value on the right
PAD = 2  # around the plot, so the line and the dot on its last point are not cut


def number(value: float) -> str:
    """A value as a chart shows it: whole numbers as such, others to 3 significant figures."""
    if value.is_integer() or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def sparkline(
    points: Sequence[tuple[float, float]], *, width: int = 240, height: int = 48, label: str
) -> Markup:
    """`points` ((Unix time, value), oldest first) as an `<svg role="img">` labelled
    "`label`: latest …, max …"; with no points, one that says "no data yet"."""
    points = [(float(t), float(v)) for t, v in points if math.isfinite(t) and math.isfinite(v)]
    bottom = height - PAD
    if not points:
        title = Markup("{}: no data yet").format(label)
        body = Markup(
            '<text class="spark-empty" x="{}" y="{}" text-anchor="middle">no data yet</text>'
        ).format(width / 2, (TEXT_ROW + bottom) / 2)
    else:
        values = [v for _, v in points]
        latest, top_value = values[-1], max(values)
        low = min(0.0, *values)
        title = Markup("{}: latest {}, max {}").format(label, number(latest), number(top_value))
        first, last = points[0][0], points[-1][0]
        span_t, span_v = last - first, top_value - low
        plot_w, plot_h = width - 2 * PAD, bottom - TEXT_ROW - PAD

        def xy(t: float, v: float) -> str:
            x = PAD + (plot_w * (t - first) / span_t if span_t > 0 else plot_w)
            y = bottom - (plot_h * (v - low) / span_v if span_v > 0 else 0.0)
            return f"{x:.1f},{y:.1f}"

        line = " ".join(xy(t, v) for t, v in points)
        dot_x, dot_y = xy(*points[-1]).split(",")
        body = Markup(
            '<polyline class="spark-line" fill="none" points="{}"/>'
            '<circle class="spark-dot" cx="{}" cy="{}" r="{}"/>'
            '<text class="spark-max" x="{}" y="{}">max {}</text>'
            '<text class="spark-latest" x="{}" y="{}" text-anchor="end">{}</text>'
        ).format(
            line,
            dot_x,
            dot_y,
            PAD,
            PAD,
            TEXT_ROW - 2,
            number(top_value),
            width - PAD,
            TEXT_ROW - 2,
            number(latest),
        )
    return Markup(
        '<svg xmlns="http://www.w3.org/2000/svg" class="spark" role="img" aria-label="{title}"'
        ' width="{w}" height="{h}" viewBox="0 0 {w} {h}"><title>{title}</title>'
        '<line class="spark-axis" x1="0" y1="{b}" x2="{w}" y2="{b}"/>{body}</svg>'
    ).format(title=title, w=width, h=height, b=bottom, body=body)
