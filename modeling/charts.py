"""The model page's charts, drawn on the server with matplotlib as SVG.

Three charts: holdout F1 over versions with the keyword-rules baseline as a line, the serving
version's confusion matrix, and its reliability diagram. Each is drawn in a light and a dark
palette (the page's own colours, static/css/app.css) on a transparent background; the page picks
one with `<picture>` and `prefers-color-scheme`. A version's figures never change once its run is
done, so a drawing is cached under the version it shows (see `cache_key`): it is drawn once per
version and theme, not per page view.

Only `matplotlib.figure.Figure` is used, never pyplot: no global figure state, safe in threads.
"""
import io
import re
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display on a server; set before anything imports pyplot

from django.core.cache import cache
from matplotlib.colors import LinearSegmentedColormap, to_rgba
from matplotlib.figure import Figure

CHARTS = ("f1-history", "confusion", "reliability")
THEMES = ("light", "dark")
CACHE_SECONDS = 7 * 24 * 3600
HISTORY_VERSIONS = 30  # the page's versions table shows as many
LONG_LABEL = 18


@dataclass(frozen=True)
class Palette:
    fg: str
    muted: str
    line: str
    accent: str
    ok: str
    bad: str
    busy: str
    on_accent: str


# The values of --fg, --muted, --line, --accent, --ok, --bad, --busy in static/css/app.css.
PALETTES = {
    "light": Palette("#1c1c1f", "#5f5f66", "#dedcd6", "#2350c8", "#1b6e35", "#b02a1c", "#8a5a00", "#ffffff"),
    "dark": Palette("#e6e6e9", "#a3a3ac", "#3a3b42", "#86a4ff", "#6dd08e", "#ff8a7a", "#f0c060", "#0c0d12"),
}


class NoChart(LookupError):
    """The version has no figures for this chart (a failed run, or a model without probabilities)."""


# --- what a chart shows, and under which key it is cached --------------------------------------


def history_points(versions) -> list[dict]:
    """Finished versions with holdout figures, oldest first: what the F1 chart plots."""
    points = [
        {
            "number": v.number,
            "trained_on": v.trained_on,
            "weighted_f1": v.metrics["weighted_f1"],
            "macro_f1": v.metrics.get("macro_f1"),
            "rules_f1": (v.baselines or {}).get("rules", {}).get("weighted_f1"),
            "majority_f1": (v.baselines or {}).get("majority", {}).get("weighted_f1"),
            "active": v.active,
        }
        for v in versions
        if v.status == "done" and (v.metrics or {}).get("weighted_f1") is not None
    ]
    return sorted(points, key=lambda p: p["number"])[-HISTORY_VERSIONS:]


def chart_keys(versions, active) -> dict[str, str]:
    """For each chart that has something to show, the version key its drawing is cached under.

    The F1 history changes when a newer version finishes or the serving one changes; the other two
    belong to the serving version alone. The key also goes into the image URL, so a browser may
    keep an image for as long as it likes."""
    keys = {}
    finished = [v for v in versions if v.status == "done" and (v.metrics or {}).get("weighted_f1") is not None]
    if finished:
        newest = max(finished, key=lambda v: v.number)
        keys["f1-history"] = f"{version_key(newest)}-{version_key(active) if active else 0}"
    metrics = (active.metrics or {}) if active else {}
    if (metrics.get("confusion_matrix") or {}).get("labels"):
        keys["confusion"] = version_key(active)
    if any(b.get("count") for b in (metrics.get("calibration") or {}).get("bins", [])):
        keys["reliability"] = version_key(active)
    return keys


def version_key(version) -> str:
    """Names one version for good: its id, and its creation time against an id handed out again
    (a rolled-back test transaction does that)."""
    return f"{version.pk}.{version.created_at.strftime('%y%m%d%H%M%S%f')}"


def cached_svg(project_id: int, chart: str, theme: str, key: str, draw) -> bytes:
    """The drawing from the cache, or `draw()` (which returns SVG bytes) stored under the key."""
    cache_key = f"model-chart:{project_id}:{chart}:{theme}:{key}"
    svg = cache.get(cache_key)
    if svg is None:
        svg = draw()
        cache.set(cache_key, svg, CACHE_SECONDS)
    return svg


def draw(chart: str, theme: str, versions, active) -> bytes:
    palette = PALETTES[theme]
    if chart == "f1-history":
        points = history_points(versions)
        if not points:
            raise NoChart("No finished version has holdout figures yet.")
        return f1_history_svg(points, palette)
    metrics = (active.metrics or {}) if active else {}
    if chart == "confusion":
        matrix = metrics.get("confusion_matrix") or {}
        if not matrix.get("labels"):
            raise NoChart("The serving version has no confusion matrix.")
        return confusion_svg(matrix["labels"], matrix["matrix"], palette)
    if chart == "reliability":
        calibration = metrics.get("calibration") or {}
        if not any(b.get("count") for b in calibration.get("bins", [])):
            raise NoChart("The serving version gives no probabilities to calibrate.")
        return reliability_svg(calibration["bins"], calibration.get("ece"), palette)
    raise NoChart(f"No chart called {chart!r}.")


# --- drawing ------------------------------------------------------------------------------------


def _figure(width: float, height: float, left: float, bottom: float, right: float = 0.15, top: float = 0.1) -> Figure:
    """Margins in inches, fixed: matplotlib's constrained layout would find them, but measuring
    every label takes half the drawing time."""
    figure = Figure(figsize=(width, height), facecolor="none")
    figure.subplots_adjust(left=left / width, bottom=bottom / height, right=1 - right / width, top=1 - top / height)
    return figure


def _style_axes(ax, palette: Palette) -> None:
    ax.set_facecolor("none")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color(palette.muted)
    ax.tick_params(colors=palette.muted, labelcolor=palette.fg, labelsize=10)
    ax.xaxis.label.set_color(palette.fg)
    ax.yaxis.label.set_color(palette.fg)


def _svg(figure: Figure) -> bytes:
    out = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "labelloop", "font.size": 10,
                                "font.family": "sans-serif"}):
        figure.savefig(out, format="svg", transparent=True, metadata={"Date": None, "Creator": None})
    return _responsive(out.getvalue())


def _responsive(svg: bytes) -> bytes:
    """Width and height in points make the image a fixed size; a viewBox alone lets CSS size it."""
    text = svg.decode()
    text = re.sub(r'(<svg[^>]*?) width="[\d.]+pt" height="[\d.]+pt"', r"\1", text, count=1)
    return text.encode()


def _short(label: str) -> str:
    return label if len(label) <= LONG_LABEL else label[: LONG_LABEL - 1] + "…"


def f1_history_svg(points: list[dict], palette: Palette) -> bytes:
    figure = _figure(7.2, 3.0, left=0.6, bottom=0.75, top=0.4)  # the legend sits above the axes
    ax = figure.add_subplot()
    _style_axes(ax, palette)
    xs = list(range(len(points)))
    weighted = [p["weighted_f1"] for p in points]
    ax.plot(xs, weighted, color=palette.accent, marker="o", markersize=5, linewidth=2, label="weighted F1", zorder=3)
    macro = [(x, p["macro_f1"]) for x, p in zip(xs, points, strict=True) if p["macro_f1"] is not None]
    if macro:
        ax.plot(*zip(*macro, strict=True), color=palette.muted, marker=".", linewidth=1.2, linestyle="--",
                label="macro F1", zorder=2)
    baselines = [p["rules_f1"] for p in points if p["rules_f1"] is not None]
    if baselines:
        # The latest run's rules score: the holdout grows over time, so this is the fair line today.
        ax.axhline(baselines[-1], color=palette.busy, linewidth=1.5, linestyle=(0, (6, 3)),
                   label=f"keyword rules ({baselines[-1]:.3f})", zorder=1)
    serving = [x for x, p in zip(xs, points, strict=True) if p["active"]]
    if serving:
        x = serving[0]
        ax.plot([x], [weighted[x]], marker="o", markersize=11, markerfacecolor="none",
                markeredgecolor=palette.ok, markeredgewidth=2, linestyle="none", label="serving", zorder=4)
    ax.set_xticks(xs, [f"v{p['number']}\n{p['trained_on']:,}" for p in points])
    if len(xs) > 12:  # keep every label readable: show about a dozen
        step = -(-len(xs) // 12)
        for i, label in enumerate(ax.get_xticklabels()):
            label.set_visible(i % step == 0 or i == len(xs) - 1)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    values = weighted + [v for _, v in macro] + baselines[-1:]
    low, high = min(values), max(values)
    pad = max(0.02, (high - low) * 0.15)
    ax.set_ylim(max(0.0, low - pad), min(1.0, high + pad) if high + pad <= 1.0 else 1.005)
    ax.set_ylabel("holdout F1")
    ax.set_xlabel("version · gold labels trained on")
    ax.grid(axis="y", color=palette.line, linewidth=0.8)
    ax.set_axisbelow(True)
    # Above the plot, where no line can run under it.
    legend = ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), fontsize=9, frameon=False, ncols=4,
                       borderaxespad=0.2, handlelength=2.4)
    for text in legend.get_texts():
        text.set_color(palette.fg)
    return _svg(figure)


def confusion_svg(labels: list[str], matrix: list[list[int]], palette: Palette) -> bytes:
    """Counts in the cells; shade by share of the gold row (recall), so a small class still shows
    where its items go."""
    n = len(labels)
    cell = max(0.3, min(0.75, 4.0 / n))  # inches: a dozen categories still fit a laptop screen
    left, bottom = 1.7, 1.35  # room for an 18-character name, level on the left, slanted below
    figure = _figure(left + n * cell + 0.1, bottom + n * cell * 0.8 + 0.1, left=left, bottom=bottom, right=0.1, top=0.1)
    ax = figure.add_subplot()
    _style_axes(ax, palette)
    shares = [[count / (sum(row) or 1) for count in row] for row in matrix]
    # From transparent to the accent: reads on either background.
    shade = LinearSegmentedColormap.from_list("accent", [to_rgba(palette.accent, 0.0), to_rgba(palette.accent, 1.0)])
    ax.imshow(shares, cmap=shade, vmin=0.0, vmax=1.0, aspect="auto")
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            strong = shares[i][j] > 0.55
            ax.text(j, i, f"{count:,}", ha="center", va="center", fontsize=10 if n <= 8 else 8,
                    color=palette.on_accent if strong else palette.fg, fontweight="bold" if i == j else "normal")
    short = [_short(label) for label in labels]
    ax.set_xticks(range(n), short, rotation=30 if n > 2 else 0, ha="right" if n > 2 else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold label")
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    return _svg(figure)


def reliability_svg(bins: list[dict], ece: float | None, palette: Palette) -> bytes:
    """Accuracy against confidence per bin, beside the diagonal of perfect calibration; how many
    items each bin holds sits below, since a bar of three items says little."""
    figure = _figure(4.8, 4.2, left=0.7, bottom=0.6, right=0.2, top=0.35)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.12})
    for ax in (top, bottom):
        _style_axes(ax, palette)
    filled = [b for b in bins if b.get("count")]
    width = [b["upper"] - b["lower"] for b in filled]
    left = [b["lower"] for b in filled]
    top.bar(left, [b["accuracy"] for b in filled], width=width, align="edge", color=to_rgba(palette.accent, 0.35),
            edgecolor=palette.accent, linewidth=1, label="accuracy")
    top.plot([b["mean_confidence"] for b in filled], [b["accuracy"] for b in filled], linestyle="none", marker="o",
             markersize=4, color=palette.accent, label="mean confidence")
    top.plot([0, 1], [0, 1], color=palette.muted, linestyle="--", linewidth=1, label="perfectly calibrated")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.grid(axis="y", color=palette.line, linewidth=0.8)
    top.set_axisbelow(True)
    if ece is not None:
        top.set_title(f"expected calibration error {ece:.3f}", fontsize=10, color=palette.fg, loc="left")
    legend = top.legend(loc="upper left", fontsize=9, frameon=False)
    for text in legend.get_texts():
        text.set_color(palette.fg)
    bottom.bar(left, [b["count"] for b in filled], width=width, align="edge", color=palette.muted)
    bottom.set_ylabel("items")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence of the top category")
    return _svg(figure)
