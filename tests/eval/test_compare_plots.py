"""Figures of the compare report: each writes a readable PNG, and the Pareto front by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from constrained_align.eval import plots
from constrained_align.eval.plots import frontier, lambda_trajectories, pareto_front, scatter_grid

NAN = float("nan")


def _eval(reward: float | None, harmful: float | None) -> dict[str, Any]:
    block = {"reward": reward, "cost": -1.0, "harmful_ratio": harmful, "over_refusal": 0.1}
    return {"greedy": {**block, "kl": 0.3}, "sampled": {**block, "kl": 0.4}}


def _scores(reward: list[Any], cost: list[Any]) -> dict[str, Any]:
    return {"greedy": {"reward": reward, "cost": cost}, "sampled": {"reward": reward, "cost": cost}}


@pytest.fixture
def models() -> list[dict[str, Any]]:
    """Reference, an online model with a long λ trajectory holding a NaN, an offline one whose
    trajectory holds a None (results.json's NaN), a fixed-λ one without trajectory or scores."""
    return [
        {
            "name": "reference", "algorithm": None, "family": None, "lambda": None,
            "lambda_trajectory": None, "eval": _eval(-1.0, 0.40),
            "scores": _scores([-1.0, 0.5, -2.0, 0.1], [1.0, -0.5, 2.0, -1.0]),
        },
        {
            "name": "ppo_lag", "algorithm": "ppo_lag", "family": "online", "lambda": 1.6,
            "lambda_trajectory": [1.0 + 0.02 * i for i in range(40)] + [NAN, 1.6],
            "eval": _eval(-0.6, 0.12),
            "scores": _scores([0.2, NAN, -0.3, 1.0], [-1.0, 0.5, None, -2.0]),
        },
        {
            "name": "c_dpo", "algorithm": "c_dpo", "family": "offline", "lambda": 1.4,
            "lambda_trajectory": [1.0, None, 1.4], "eval": _eval(-0.2, 0.20),
            "scores": _scores([0.3, 0.4, -0.1], [-2.0, -1.5, 0.2]),
        },
        {
            "name": "sacpo", "algorithm": "sacpo", "family": "offline", "lambda": 0.8,
            "lambda_trajectory": [], "eval": None, "scores": None,
        },
    ]  # fmt: skip


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every figure the module saves (still written to disk), for inspection after the call."""
    seen: list[Any] = []
    real = plots.save_figure

    def capture(fig: Any, path: Any, **kwargs: Any) -> Path:
        seen.append(fig)
        return real(fig, path, **kwargs)

    monkeypatch.setattr(plots, "save_figure", capture)
    return seen


def _png_size(path: Path) -> tuple[int, int]:
    """Size of a complete, valid PNG; fails on a missing, empty or truncated file."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()  # decodes every pixel: a truncated file raises
        width, height = image.size
    assert width > 0 and height > 0
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    return width, height


# --- pareto_front -------------------------------------------------------------------------------


def test_pareto_front_by_hand() -> None:
    """Low x, high y better; q dominates p iff q.x ≤ p.x, q.y ≥ p.y, one strictly.

    0 (0.10, 1.0): nothing has x ≤ 0.10 with y ≥ 1.0 → front.
    1 (0.20, 2.0): only its duplicate 4 matches, and equal points do not dominate → front.
    2 (0.10, 0.5): 0 has the same x and a higher y → dominated.
    3 (0.30, 1.5): 1 has lower x and higher y → dominated.
    4 (0.20, 2.0): duplicate of 1 → front.
    5 (0.05, 0.2): the lowest x → front.
    6 (NaN, 3.0): not finite → never on the front (and would dominate 7 if it counted).
    7 (0.40, 2.0): 1 ties on y with a strictly lower x → dominated.
    """
    points = [(0.1, 1.0), (0.2, 2.0), (0.1, 0.5), (0.3, 1.5), (0.2, 2.0), (0.05, 0.2)]
    points += [(NAN, 3.0), (0.4, 2.0)]
    assert pareto_front(points) == [0, 1, 4, 5]


def test_pareto_front_edge_cases() -> None:
    """Empty → []; one point → itself; a non-finite point dominates nothing ((−inf, inf) would
    dominate anything, yet (0.5, 0.5) stays on the front); y rising with x → all on the front;
    y falling with x → only the first."""
    assert pareto_front([]) == []
    assert pareto_front([(0.3, -1.0)]) == [0]
    assert pareto_front([(0.5, 0.5), (-math.inf, math.inf)]) == [0]
    assert pareto_front([(NAN, NAN), (NAN, 1.0)]) == []
    assert pareto_front([(0.3, 3.0), (0.1, 1.0), (0.2, 2.0)]) == [0, 1, 2]
    assert pareto_front([(0.1, 3.0), (0.2, 2.0), (0.3, 1.0)]) == [0]


# --- scatter_grid -------------------------------------------------------------------------------


def test_scatter_grid_one_panel_per_model(tmp_path: Path, models: list, figures: list) -> None:
    """4 models → a 1 × 4 grid; NaN/None pairs skipped (ppo_lag keeps 2 of 4); sacpo, without
    scores, keeps its panel; the c = 0 line is drawn in every scored panel."""
    width, height = _png_size(scatter_grid(models, tmp_path / "scatter.png"))
    assert width > height
    axes = [ax for ax in figures[0].axes if ax.get_visible()]
    assert len(axes) == 4
    titles = [ax.get_title() for ax in axes]
    assert titles[0].startswith("reference\nn=4, c>0: 50.0%")
    assert titles[1].startswith("ppo_lag\nn=2, c>0: 0.0%") and "(2 NaN)" in titles[1]
    assert titles[3] == "sacpo" and axes[3].texts[0].get_text() == "no scores"
    for ax in axes[:3]:
        assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.get_lines())


def test_scatter_grid_single_empty_and_sampled(tmp_path: Path, models: list) -> None:
    assert _png_size(scatter_grid(models[:1], tmp_path / "one.png", mode="sampled"))
    assert _png_size(scatter_grid([], tmp_path / "none.png"))
    assert _png_size(scatter_grid(models[3:], tmp_path / "unscored.png"))


def test_scatter_grid_rejects_unpaired_scores(tmp_path: Path) -> None:
    bad = [{"name": "x", "scores": _scores([1.0, 2.0], [0.5])}]
    with pytest.raises(ValueError, match="2 rewards but 1 costs"):
        scatter_grid(bad, tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


# --- lambda_trajectories ------------------------------------------------------------------------


def test_lambda_trajectories_panels_and_legend(tmp_path: Path, models: list, figures: list) -> None:
    """Online and offline panels; NaN points dropped (ppo_lag: 41 of 42, c_dpo: 2 of 3, at their
    logged steps); sacpo's final λ without trajectory is listed in the legend."""
    _png_size(lambda_trajectories(models, tmp_path / "lambda.png", cost_limit=0.0))
    fig = figures[0]
    online, offline = fig.axes
    (ppo,) = online.get_lines()
    assert len(ppo.get_xdata()) == 41 and ppo.get_xdata()[-1] == 41
    (cdpo,) = offline.get_lines()
    assert list(cdpo.get_xdata()) == [0, 2] and list(cdpo.get_ydata()) == [1.0, 1.4]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["ppo_lag (online)", "c_dpo (offline)", "sacpo: final λ = 0.8, no trajectory"]


def test_lambda_trajectories_without_any_still_writes(
    tmp_path: Path, models: list, figures: list
) -> None:
    """Reference (None), sacpo ([]) and an all-NaN trajectory: nothing to draw, a file anyway."""
    none = [models[0], models[3], {"name": "x", "family": "online", "lambda_trajectory": [NAN]}]
    _png_size(lambda_trajectories(none, tmp_path / "lambda.png"))
    (ax,) = figures[0].axes
    assert not ax.get_lines()
    assert [t.get_text() for t in ax.texts] == ["no λ trajectory to plot"]
    _png_size(lambda_trajectories([], tmp_path / "empty.png"))


# --- frontier -----------------------------------------------------------------------------------


def test_frontier_points_front_and_labels(tmp_path: Path, models: list, figures: list) -> None:
    """Points (harmful, reward): reference (0.40, −1.0), ppo_lag (0.12, −0.6), c_dpo (0.20, −0.2);
    sacpo has no eval and is left out. ppo_lag and c_dpo are non-dominated, the reference is
    dominated by both, so the step line runs (0.12, −0.6) → (0.20, −0.2) → on to x = 0.40."""
    _png_size(frontier(models, tmp_path / "frontier.png"))
    (ax,) = figures[0].axes
    step = next(line for line in ax.get_lines() if line.get_label() == "Pareto front")
    assert list(step.get_xdata()) == [0.12, 0.20, 0.40]
    assert list(step.get_ydata()) == [-0.6, -0.2, -0.2]
    assert step.get_drawstyle() == "steps-post"
    assert sorted(t.get_text() for t in ax.texts) == ["c_dpo", "ppo_lag", "reference"]
    legend = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert legend == ["Pareto-optimal", "Pareto front", "reference", "online", "offline"]
    assert ax.get_xlabel().startswith("harmful ratio") and "reward" in ax.get_ylabel()


def test_frontier_single_model_and_no_metrics(tmp_path: Path, models: list, figures: list) -> None:
    """Any mode key works; a model of no family (the testbed's π*) is a diamond, "other"."""
    optimum = {"name": "π*", "family": None, "eval": {"exact": {"reward": 1.0, "harmful_ratio": 0}}}
    _png_size(frontier([optimum], tmp_path / "optimum.png", mode="exact"))
    legend = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert legend == ["Pareto-optimal", "Pareto front", "other"]
    assert _png_size(frontier(models[:1], tmp_path / "one.png", mode="sampled"))
    nan_eval = {"name": "y", "eval": _eval(NAN, None)}
    assert _png_size(frontier([models[3], nan_eval], tmp_path / "none.png"))
    assert _png_size(frontier([], tmp_path / "empty.png"))
