"""The testbed comparison: every key on one bandit, as a table and a λ-trajectory plot."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from constrained_align.testbed.bandit import Bandit
from constrained_align.testbed.runner import TestbedResult, run
from constrained_align.utils import save_figure

#: TV tolerance of each target in population mode (the issue's acceptance numbers).
TV_TOL = 0.01
LAMBDA_RTOL = 0.02
COST_TOL = 0.01


@dataclass
class Row:
    """One line of the table, with whether the key met its target."""

    key: str
    result: TestbedResult

    @property
    def met(self) -> bool:
        r = self.result
        if r.target.name == "π_hard":
            # SafeDPO reaches π_hard only asymptotically: require the unsafe mass gone and the
            # distribution within 5× the usual tolerance.
            return r.unsafe_mass <= 1e-3 and r.tv_to_target <= 5 * TV_TOL
        ok = r.tv_to_target <= TV_TOL
        if r.target.name == "π*" and r.lambda_star > 0:
            ok = ok and abs(r.expected_cost - r.bandit.cost_limit) <= COST_TOL
            if r.lam is not None:
                ok = ok and abs(r.lam - r.lambda_star) <= LAMBDA_RTOL * r.lambda_star
        return ok


def run_keys(keys: list[str], bandit: Bandit, *, seed: int = 0, **overrides) -> list[Row]:
    """Run every key on ``bandit`` with its testbed settings."""
    return [Row(key, run(key, bandit, seed=seed, **overrides)) for key in keys]


def format_table(rows: list[Row]) -> str:
    """A fixed-width table: target, TV to it and to π*, E[c], violation, λ vs λ*, steps, time."""
    header = (
        f"{'key':<12} {'target':<14} {'TV(target)':>10} {'TV(π*)':>8} {'E[c]':>8} "
        f"{'viol.':>7} {'λ':>8} {'λ*':>8} {'steps':>6} {'sec':>6}  met"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        r = row.result
        lam = "—" if r.lam is None else f"{r.lam:.4f}"
        lines.append(
            f"{row.key:<12} {r.target.name:<14} {r.tv_to_target:>10.2e} {r.tv_to_optimum:>8.4f} "
            f"{r.expected_cost:>8.4f} {r.violation:>7.4f} {lam:>8} {r.lambda_star:>8.4f} "
            f"{r.steps:>6d} {r.seconds:>6.1f}  {'yes' if row.met else 'NO'}"
        )
    return "\n".join(lines)


def plot_lambdas(rows: list[Row], path: str | Path) -> Path:
    """PNG of λ per logged step for every key that has one, with λ* dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    lam_star = None
    for row in rows:
        points = [
            (i, h["dual/lambda"])
            for i, h in enumerate(row.result.history)
            if "dual/lambda" in h and math.isfinite(h["dual/lambda"])
        ]
        lam_star = row.result.lambda_star
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, label=row.key, lw=1.5)
    if lam_star is not None:
        ax.axhline(lam_star, color="black", ls="--", lw=1, label=f"λ* = {lam_star:.4f}")
    ax.set_xlabel("logged step (RL step, DPO epoch or outer round)")
    ax.set_ylabel("λ")
    ax.set_title("Lagrange multiplier trajectories on the closed-form testbed")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)
