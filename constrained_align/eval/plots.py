"""Figures of the ``constrained-align compare`` report, from the ``models`` of its results.json.

* :func:`scatter_grid` — one reward-vs-cost scatter per model (Safe RLHF's figure), shared axes,
  a dashed line at c = 0 (c > 0 unsafe) and the unsafe fraction in each title;
* :func:`lambda_trajectories` — λ per logged step for every model that has a multiplier;
* :func:`frontier` — the helpfulness–harmlessness frontier: harmful ratio against mean reward,
  one labelled point per model, the reference as a black star, the Pareto-optimal models joined by
  a step line (:func:`pareto_front`).

Each model is a dict with ``name``, ``family`` (``online`` | ``offline`` | None), ``lambda``,
``lambda_trajectory``, ``eval[mode][metric]`` and ``scores[mode]["reward" | "cost"]``. Any of
them may be missing or None, and a number may be None or NaN (results.json spells NaN ``null``):
such values are skipped, never fatal. Figures are ``matplotlib.figure.Figure`` objects, not
pyplot ones, so drawing them never switches the user's backend; they are saved with
:func:`constrained_align.utils.save_figure`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from constrained_align.utils import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["frontier", "lambda_trajectories", "pareto_front", "scatter_grid"]

Model = Mapping[str, Any]

REFERENCE = "reference"
LAMBDA_XLABEL = "logged step (online: RL step; offline: epoch/round)"
_SAFE, _UNSAFE = "#2e7d32", "#c62828"
_FAMILY_STYLE = {"online": "-", "offline": "--"}  # λ lines
_FAMILY_MARKER = {"online": "o", "offline": "s"}  # frontier points; any other family: "D"
_MAX_COLS = 4


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when low x and high y are better.

    ``q`` dominates ``p`` when ``q.x ≤ p.x`` and ``q.y ≥ p.y`` with at least one inequality strict.
    Equal points do not dominate each other, so duplicates on the front are all kept. A point with
    a NaN or infinite coordinate is never on the front and dominates nothing. O(n²), for a
    handful of models.

    Args:
        points: ``(x, y)`` pairs, e.g. (harmful ratio, mean reward).

    Returns:
        The indices of the front, ascending.
    """
    xy = [(float(x), float(y)) for x, y in points]
    ok = [math.isfinite(x) and math.isfinite(y) for x, y in xy]

    def dominated(i: int) -> bool:
        xi, yi = xy[i]
        return any(
            ok[j] and xj <= xi and yj >= yi and (xj < xi or yj > yi)
            for j, (xj, yj) in enumerate(xy)
        )

    return [i for i in range(len(xy)) if ok[i] and not dominated(i)]


def scatter_grid(models: Sequence[Model], path: str | Path, *, mode: str = "greedy") -> Path:
    """One reward-vs-cost scatter per model, in a grid with shared axes.

    Every evaluated response is a point (x = cost c, y = reward r), green when c ≤ 0 and red when
    c > 0, with a dashed line at c = 0. Each title gives the model name, the number of scored
    responses, the unsafe fraction P(c > 0) and the mean reward. A model without scores keeps its
    panel, marked "no scores".

    Args:
        models: the report's per-model dicts.
        path: the PNG to write.
        mode: the decoding mode whose scores are drawn (``greedy`` | ``sampled`` | ...).

    Returns:
        ``path``.
    """
    if not models:
        return _empty_figure(path, f"Reward vs cost ({mode}): no models to plot")
    ncols = min(len(models), _MAX_COLS)
    nrows = math.ceil(len(models) / ncols)
    fig = _figure((max(0.6 + 2.9 * ncols, 4.8), 1.1 + 2.5 * nrows))
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, model in zip(axes, models):
        _scatter_panel(ax, model, mode)
    for ax in axes[len(models) :]:
        ax.set_visible(False)
    for ax in axes[max(len(models) - ncols, 0) : len(models)]:
        ax.tick_params(labelbottom=True)  # lowest panel of its column: its x ticks are shown
    fig.suptitle(f"Reward vs cost per response ({mode})\nright of the dashed line: unsafe")
    fig.supxlabel("cost c (c > 0: unsafe)")
    fig.supylabel("reward r")
    return save_figure(fig, path)


def _scatter_panel(ax: Axes, model: Model, mode: str) -> None:
    """One model's points, boundary line and title on ``ax``."""
    name = str(model.get("name", "?"))
    pairs = _scored_pairs(model, mode)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    if pairs is None:
        ax.set_title(name, fontsize=9)
        ax.text(0.5, 0.5, "no scores", transform=ax.transAxes, ha="center", va="center")
        return
    cost, reward, skipped = pairs
    unsafe = cost > 0
    ax.scatter(cost[~unsafe], reward[~unsafe], s=7, c=_SAFE, alpha=0.5, linewidths=0)
    ax.scatter(cost[unsafe], reward[unsafe], s=7, c=_UNSAFE, alpha=0.6, linewidths=0)
    ax.axvline(0.0, color="black", linewidth=1.0, linestyle="--")
    n = len(cost)
    stats = f"n={n}, c>0: {unsafe.mean():.1%}, mean r {reward.mean():.2f}" if n else "n=0"
    if skipped:
        stats += f" ({skipped} NaN)"
    ax.set_title(f"{name}\n{stats}", fontsize=9)


def _scored_pairs(model: Model, mode: str) -> tuple[np.ndarray, np.ndarray, int] | None:
    """``(cost, reward, number skipped)`` of the finite pairs, or None when there are no scores.

    Raises:
        ValueError: reward and cost lists of different lengths (they would pair up wrongly).
    """
    block = (model.get("scores") or {}).get(mode) or {}
    reward, cost = block.get("reward"), block.get("cost")
    if not reward or not cost:
        return None
    r, c = _floats(reward), _floats(cost)
    if len(r) != len(c):
        raise ValueError(
            f"model {model.get('name')!r}: {len(r)} rewards but {len(c)} costs in scores[{mode!r}]"
        )
    keep = np.isfinite(r) & np.isfinite(c)
    return c[keep], r[keep], int((~keep).sum())


def lambda_trajectories(
    models: Sequence[Model], path: str | Path, *, cost_limit: float | None = None
) -> Path:
    """λ against logged step, one line per model with a non-empty ``lambda_trajectory``.

    Online models (hundreds of RL steps) and the others (a few epochs or rounds) get side-by-side
    panels with their own axes, so the short offline lines are not squashed against x = 0. NaN
    entries are skipped (the line joins the neighbours). A model with a final ``lambda`` but no
    trajectory (a fixed or one-shot λ) is listed in the legend. With no trajectory at all the
    figure still exists and its title says so.

    Args:
        models: the report's per-model dicts.
        path: the PNG to write.
        cost_limit: the constraint's limit, shown in the title.

    Returns:
        ``path``.
    """
    from matplotlib.lines import Line2D

    limit = "" if cost_limit is None else f" (constraint E[c] ≤ {cost_limit:g})"
    groups: dict[str, list[tuple[Model, Any, np.ndarray]]] = {"online": [], "offline": []}
    finals = []
    for model, colour in zip(models, _colours(models)):
        lam = _floats(model.get("lambda_trajectory") or [])
        if np.isfinite(lam).any():
            family = "online" if model.get("family") == "online" else "offline"
            groups[family].append((model, colour, lam))
        elif math.isfinite(final := _float(model.get("lambda"))):
            label = f"{model.get('name')}: final λ = {final:.3g}, no trajectory"
            finals.append(Line2D([], [], ls="", label=label))
    panels = [(family, rows) for family, rows in groups.items() if rows]
    fig = _figure((3.6 + 3.4 * max(len(panels), 1), 4.6))
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for ax, (family, rows) in zip(axes, panels):
        _lambda_panel(ax, family, rows)
    axes[0].set_ylabel("λ (multiplier of the cost)")
    fig.supxlabel(LAMBDA_XLABEL, fontsize=10)
    if panels:
        fig.suptitle(f"Lagrange multiplier per logged step{limit}")
    else:
        fig.suptitle(f"No model logged a λ trajectory{limit}")
        axes[0].text(0.5, 0.5, "no λ trajectory to plot", transform=axes[0].transAxes, ha="center")
        axes[0].set(xticks=[], yticks=[])
    handles = [h for ax in axes for h in ax.get_legend_handles_labels()[0]] + finals
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return save_figure(fig, path)


def _lambda_panel(ax: Axes, panel: str, rows: list[tuple[Model, Any, np.ndarray]]) -> None:
    """The ``online`` or ``offline`` panel: one line per model, solid online, dashed offline."""
    from matplotlib.ticker import MaxNLocator

    for model, colour, lam in rows:
        steps = np.flatnonzero(np.isfinite(lam))  # logged step index of each finite λ
        family = model.get("family")
        style = _FAMILY_STYLE.get(str(family), ":")
        marker = "o" if len(steps) <= 30 else None
        label = f"{model.get('name')} ({family})" if family else str(model.get("name"))
        ax.plot(steps, lam[steps], style, color=colour, marker=marker, ms=3.5, lw=1.6, label=label)
    ax.set_title("online (RL step)" if panel == "online" else "offline (epoch / round)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


def frontier(models: Sequence[Model], path: str | Path, *, mode: str = "greedy") -> Path:
    """The helpfulness–harmlessness frontier: harmful ratio (x) against mean reward (y).

    One labelled point per model (the reference a black star, online models circles, offline
    ones squares, others diamonds); the Pareto-optimal models (lowest harmful ratio, highest
    reward) are ringed and joined by a step line, the edge of the region they dominate. Models
    missing either metric are skipped and named under the plot.

    Args:
        models: the report's per-model dicts.
        path: the PNG to write.
        mode: the decoding mode whose ``eval`` metrics are drawn (``greedy`` | ``sampled`` | ...).

    Returns:
        ``path``.
    """
    placed, missing = [], []
    for model, colour in zip(models, _colours(models)):
        metrics = (model.get("eval") or {}).get(mode) or {}
        x, y = _float(metrics.get("harmful_ratio")), _float(metrics.get("reward"))
        if math.isfinite(x) and math.isfinite(y):
            placed.append((model, colour, x, y))
        else:
            missing.append(str(model.get("name")))
    if not placed:
        return _empty_figure(path, f"Helpfulness–harmlessness frontier ({mode}): no metrics")
    fig = _figure((8.4, 5.4))
    ax = fig.add_subplot()
    _draw_front(ax, [(x, y) for *_, x, y in placed])
    labels = [_frontier_point(ax, model, colour, x, y) for model, colour, x, y in placed]
    ax.set_xlabel("harmful ratio (share of harmful prompts answered unsafely; lower is safer)")
    ax.set_ylabel("mean reward (higher is more helpful)")
    ax.set_title(f"Helpfulness–harmlessness frontier ({mode})")
    ax.grid(alpha=0.3)
    ax.margins(0.1)
    handles = _frontier_handles(ax, placed)
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    if missing:
        fig.supxlabel("no metrics, not drawn: " + ", ".join(missing), fontsize=8, x=0.01, ha="left")
    _place_labels(fig, ax, labels)
    return save_figure(fig, path)


def _draw_front(ax: Axes, points: list[tuple[float, float]]) -> None:
    """Ring the Pareto-optimal points and join them by a step line, run on to the largest x."""
    front = sorted((points[i] for i in pareto_front(points)), key=lambda p: (p[0], -p[1]))
    xs, ys = [x for x, _ in front], [y for _, y in front]
    ax.scatter(
        xs, ys, s=240, facecolors="none", edgecolors="0.45", zorder=2, label="Pareto-optimal"
    )
    right = max(x for x, _ in points)
    if right > xs[-1]:  # past the most helpful front point the best reward stays ys[-1]
        xs, ys = [*xs, right], [*ys, ys[-1]]
    ax.step(xs, ys, where="post", color="0.45", lw=1.2, zorder=1, label="Pareto front")


def _frontier_point(ax: Axes, model: Model, colour: Any, x: float, y: float) -> tuple[Any, float]:
    """One model's marker and name label; returns the label and the marker's half size (pt)."""
    if model.get("name") == REFERENCE:
        size, marker, colour = 220.0, "*", "black"
    else:
        size, marker = 55.0, _FAMILY_MARKER.get(str(model.get("family")), "D")
    ax.scatter([x], [y], marker=marker, s=size, color=colour, edgecolors="black", zorder=3)
    half = 0.5 * math.sqrt(size)
    # A leader line, shown only when the label has to move away (_place_labels).
    leader = {"arrowstyle": "-", "lw": 0.6, "color": "0.4", "shrinkA": 0, "shrinkB": half + 2}
    label = ax.annotate(
        str(model.get("name")), (x, y), xytext=(0, 0), textcoords="offset points", fontsize=8,
        zorder=4, arrowprops=leader,
        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
    )  # fmt: skip
    return label, half


# Label spots tried in turn: unit offsets (scaled by the marker size, then twice as far) and the
# text alignment that keeps the label clear of its own marker.
_LABEL_SPOTS = tuple(
    (reach * dx, reach * dy, ha, va, reach > 1.0)
    for reach in (1.0, 2.4)
    for dx, dy, ha, va in (
        (1.0, 0.6, "left", "bottom"), (1.0, -0.6, "left", "top"), (-1.0, 0.6, "right", "bottom"),
        (-1.0, -0.6, "right", "top"), (0.0, 1.3, "center", "bottom"), (0.0, -1.3, "center", "top"),
    )
)  # fmt: skip


def _place_labels(fig: Figure, ax: Axes, labels: list[tuple[Any, float]]) -> None:
    """Greedily move each name label to the cheapest spot: cost = area over other markers, over
    labels placed before it and (×4) outside the axes, plus the label's own area when it sits
    nearer another marker than its own without a leader line. The first free spot wins."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig.draw_without_rendering()  # final limits and layout, so extents are in pixels
    centres = [ax.transData.transform(label.xy) for label, _ in labels]
    radii = [half * fig.dpi / 72.0 for _, half in labels]
    markers = [Bbox.from_extents(*(c - r), *(c + r)) for c, r in zip(centres, radii)]
    frame = ax.get_window_extent()

    def area(box: Any) -> float:
        return 0.0 if box is None else box.width * box.height

    def gap(box: Any, c: Any) -> float:  # pixels from point c to the box
        (x, y), (x0, y0), (x1, y1) = c, box.min, box.max
        return math.hypot(max(x0 - x, 0, x - x1), max(y0 - y, 0, y - y1))

    taken: list[Any] = []
    for i, (label, half) in enumerate(labels):
        others = markers[:i] + markers[i + 1 :] + taken
        best: tuple[float, tuple[float, float, str, str, bool]] | None = None
        for spot in _LABEL_SPOTS:
            dx, dy, ha, va, far = spot
            label.set(position=((half + 2) * dx, (half + 2) * dy), ha=ha, va=va)
            box = Text.get_window_extent(label)  # the text alone, not its leader line
            cost = 4.0 * (area(box) - area(Bbox.intersection(box, frame)))
            cost += sum(area(Bbox.intersection(box, o)) for o in others)
            near = min((gap(box, c) for j, c in enumerate(centres) if j != i), default=math.inf)
            cost += area(box) if not far and near < gap(box, centres[i]) else 0.0
            if best is None or cost < best[0]:
                best = (cost, spot)
            if cost == 0.0:
                break
        assert best is not None  # _LABEL_SPOTS is not empty
        dx, dy, ha, va, far = best[1]
        label.set(position=((half + 2) * dx, (half + 2) * dy), ha=ha, va=va)
        label.arrow_patch.set_visible(far)
        taken.append(Text.get_window_extent(label))


def _frontier_handles(ax: Axes, placed: list[tuple[Model, Any, float, float]]) -> list[Any]:
    """Legend entries: the front, its rings, then one marker per kind of point present."""
    from matplotlib.lines import Line2D

    handles = ax.get_legend_handles_labels()[0]
    names = {str(row[0].get("name")) for row in placed}
    families = {str(row[0].get("family")) for row in placed if row[0].get("name") != REFERENCE}
    kinds = [(REFERENCE in names, "*", "black", 13, "reference")]
    kinds += [(family in families, m, "0.6", 7, family) for family, m in _FAMILY_MARKER.items()]
    kinds.append((bool(families - set(_FAMILY_MARKER)), "D", "0.6", 6, "other"))
    for present, marker, colour, size, label in kinds:
        if present:
            style = {"ls": "", "marker": marker, "color": colour, "mec": "black", "ms": size}
            handles.append(Line2D([], [], label=label, **style))
    return handles


def _colours(models: Sequence[Model]) -> list[Any]:
    """One colour per model, stable across the report's figures; the reference is black."""
    from matplotlib import colormaps

    # tab20 pairs a dark and a light shade of each hue: take the ten dark ones first.
    cmap, colours, k = colormaps["tab20"], [], 0
    for model in models:
        if model.get("name") == REFERENCE:
            colours.append("black")
            continue
        colours.append(cmap((2 * k) % 20 + (k // 10) % 2))
        k += 1
    return colours


def _float(value: Any) -> float:
    """``value`` as a float; None or anything non-numeric is NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _floats(values: Sequence[Any]) -> np.ndarray:
    return np.array([_float(v) for v in values], dtype=float)


def _figure(size: tuple[float, float]) -> Figure:
    """A pyplot-free figure (no backend switch, no global state) with constrained layout."""
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=120, layout="constrained")


def _empty_figure(path: str | Path, title: str) -> Path:
    fig = _figure((6.0, 2.5))
    fig.add_subplot().set_axis_off()
    fig.suptitle(title)
    return save_figure(fig, path)
