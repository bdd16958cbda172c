"""Pictures for `convcore demo`: activation maps of a conv layer and a per-layer cycle chart.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no
display, no global state), so they can be written from tests and worker processes.
"""

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.ticker import PercentFormatter

#: Resolution of the written PNG files.
DPI = 120
#: At most this many activation maps per row of the grid.
MAX_MAP_COLUMNS = 8
#: Size of one activation map in the figure (inches).
MAP_INCHES = 1.1
#: Width of one layer's bar group in the layer chart (inches), and the chart's height.
LAYER_INCHES = 1.0
CHART_HEIGHT_INCHES = 4.5
CHART_MIN_WIDTH_INCHES = 6.0
#: Report keys every layer of `plot_layer_chart` needs.
LAYER_KEYS = ("name", "op", "cycles", "macs", "mac_utilization")


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI)
    return path


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An input image as (array for imshow, colormap): [H,W] or [1,H,W] gray, [3,H,W] RGB."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3 and image.shape[0] == 1:
        image = image[0]
    if image.ndim == 2:
        return image, "gray"
    if image.ndim == 3 and image.shape[0] == 3:
        rgb = image.transpose(1, 2, 0)
        span = rgb.max() - rgb.min()
        return (rgb - rgb.min()) / span if span > 0 else np.zeros_like(rgb), None
    raise ValueError(f"image must have shape [H, W], [1, H, W] or [3, H, W], not {list(image.shape)}")


def plot_activation_maps(maps, path, *, image=None, title=None, labels=None) -> Path:
    """Draw one conv layer's activation maps for one input as a grid of small images.

    Parameters
    ----------
    maps : array [C, H, W]
        The layer's output for one input, one map per filter (int8 codes or real values).
    path : str or Path
        PNG file to write; its folder is created.
    image : array [H, W], [1, H, W] or [3, H, W], optional
        The input, drawn larger on the left as in the lecture's activation-map figure.
    title : str, optional
        Figure title.
    labels : sequence of C str, optional
        One caption per map; default "filter 0", "filter 1", ...

    All maps share one gray scale (shown by the color bar), so a filter that barely responds
    looks dark. Pixels are drawn with nearest interpolation: one square per activation.
    Returns the path written.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"maps must have shape [C, H, W] with no empty axis, not {list(maps.shape)}")
    n_maps = maps.shape[0]
    if labels is None:
        labels = [f"filter {i}" for i in range(n_maps)]
    elif len(labels) != n_maps:
        raise ValueError(f"labels must give one caption per map ({n_maps}), not {len(labels)}")
    maps = maps.astype(np.float64)
    cols = min(n_maps, MAX_MAP_COLUMNS)
    rows = math.ceil(n_maps / cols)
    image_cols = 0 if image is None else max(2, min(rows, 3))
    fig = Figure(figsize=((cols + image_cols + 0.3) * MAP_INCHES + 0.8,
                          rows * MAP_INCHES + (0.6 if title else 0.2)), layout="constrained")
    grid = GridSpec(rows, cols + image_cols + (1 if image_cols else 0), figure=fig,
                    width_ratios=[1.0] * image_cols + ([0.3] if image_cols else []) + [1.0] * cols)
    if image is not None:
        shown, cmap = _display_image(image)
        ax = fig.add_subplot(grid[:, :image_cols])
        ax.imshow(shown, cmap=cmap, interpolation="nearest")
        ax.set_title("input", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    first = image_cols + (1 if image_cols else 0)
    vmin, vmax = maps.min(), maps.max()
    if vmin == vmax:
        vmax = vmin + 1
    shown = None
    for i in range(n_maps):
        ax = fig.add_subplot(grid[i // cols, first + i % cols])
        shown = ax.imshow(maps[i], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(labels[i], fontsize=8, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    colorbar = fig.colorbar(shown, ax=fig.axes[-n_maps:], fraction=0.05, aspect=30)
    colorbar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _check_report(report) -> list[dict]:
    layers = report.get("layers") if isinstance(report, dict) else None
    if not layers:
        raise ValueError("report must be a dict with a non-empty 'layers' list")
    for i, layer in enumerate(layers):
        missing = [key for key in LAYER_KEYS if key not in layer]
        if missing:
            raise ValueError(f"report layer {i} ({layer.get('name', '?')}) lacks {', '.join(missing)}")
        utilization = layer["mac_utilization"]
        if utilization is not None and not 0 <= utilization <= 1:
            raise ValueError(f"report layer {i} ({layer['name']}): mac_utilization must be a "
                             f"fraction in [0, 1] or None, not {utilization}")
        if layer["cycles"] < 0:
            raise ValueError(f"report layer {i} ({layer['name']}): cycles must be >= 0, "
                             f"not {layer['cycles']}")
    return layers


def _total_line(total: dict) -> str:
    parts = []
    if "cycles" in total:
        parts.append(f"{total['cycles']:,} cycles")
    if "macs" in total:
        parts.append(f"{total['macs']:,} MACs")
    if total.get("mac_utilization") is not None:
        parts.append(f"MAC utilization {total['mac_utilization']:.1%}")
    return "total: " + ", ".join(parts) if parts else ""


def plot_layer_chart(report, path, *, title="Cycles and MAC utilization per layer") -> Path:
    """Draw cycles per layer (bars) and MAC utilization per layer (line, right axis).

    Parameters
    ----------
    report : dict
        ``{"layers": [{"name", "op", "cycles", "macs", "mac_utilization"}, ...], "total": {...}}``;
        ``mac_utilization`` is a fraction in [0, 1], or None for layers without MACs (pooling
        alone), which get no point on the line. ``total`` may give ``cycles``, ``macs`` and
        ``mac_utilization`` for the subtitle.
    path : str or Path
        PNG file to write; its folder is created.
    title : str
        Figure title.

    Returns the path written.
    """
    layers = _check_report(report)
    names = [f"{layer['name']}\n({layer['op']})" for layer in layers]
    cycles = np.array([layer["cycles"] for layer in layers], dtype=np.float64)
    positions = np.arange(len(layers))
    fig = Figure(figsize=(max(CHART_MIN_WIDTH_INCHES, LAYER_INCHES * len(layers) + 2.0),
                          CHART_HEIGHT_INCHES), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.bar(positions, cycles, color="tab:blue", label="cycles")
    ax.bar_label(bars, labels=[f"{int(c):,}" for c in cycles], fontsize=8, padding=2)
    ax.set_ylabel("cycles", color="tab:blue")
    ax.set_ylim(0, max(cycles.max(), 1) * 1.15)
    ax.set_xticks(positions, names, fontsize=8)
    ax.tick_params(axis="y", labelcolor="tab:blue")

    util_ax = ax.twinx()
    util = np.array([np.nan if layer["mac_utilization"] is None else layer["mac_utilization"]
                     for layer in layers], dtype=np.float64)
    util_ax.plot(positions, util, color="tab:orange", marker="o", label="MAC utilization")
    for x, u in zip(positions, util):
        if not np.isnan(u):
            util_ax.annotate(f"{u:.0%}", (x, u), textcoords="offset points", xytext=(0, 6),
                             ha="center", fontsize=8, color="tab:orange")
    util_ax.set_ylim(0, 1.1)
    util_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    util_ax.set_ylabel("MAC utilization", color="tab:orange")
    util_ax.tick_params(axis="y", labelcolor="tab:orange")

    handles = [bars, util_ax.lines[0]]
    ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    subtitle = _total_line(report.get("total") or {})
    ax.set_title(f"{title}\n{subtitle}" if subtitle else title, fontsize=10)
    return _save(fig, path)
