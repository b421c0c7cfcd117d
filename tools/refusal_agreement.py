"""Agreement of the library's refusal rule with XSTest's human labels, and over-refusal rates.

    python tools/refusal_agreement.py ../shared/data/xstest/model_completions

prints accuracy, precision and recall of :func:`constrained_align.eval.refusal.is_refusal`
(full refusal = positive, full compliance = negative) on all, safe and unsafe prompts and per
model, the same for XSTest's own string-match list, and each model's over-refusal rate by the
rule and by the humans (the figures quoted in ``constrained_align/eval/refusal.py``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from constrained_align.data.xstest import load_xstest_completions
from constrained_align.eval.refusal import (
    COMPLIANCE_LABEL,
    REFUSAL_LABEL,
    XSTEST_OPENINGS,
    agreement,
    is_refusal,
    normalise,
    refusal_rate,
)


def _is_xstest_refusal(response: str) -> bool:
    """The rule with the paper's openings only (:data:`XSTEST_OPENINGS`)."""
    return normalise(response).startswith(XSTEST_OPENINGS)


# (response, final_label, prompt_harmful, model) of one XSTest completion.
_Row = tuple[str, str, bool, str]


def _print_agreement(name: str, rows: list[_Row], classify: Callable[[str], bool]) -> None:
    stats = agreement([r[0] for r in rows], [r[1] for r in rows], classify=classify)
    print(f"{name:16s} " + "  ".join(f"{k} {round(v, 3)}" for k, v in stats.items()))


def _print_over_refusal(model: str, safe_rows: list[_Row]) -> None:
    """Rule's refusal rate vs the human full-refusal and full-or-partial rates of one model."""
    full = sum(r[1] == REFUSAL_LABEL for r in safe_rows) / len(safe_rows)
    any_refusal = sum(r[1] != COMPLIANCE_LABEL for r in safe_rows) / len(safe_rows)
    rule = refusal_rate([r[0] for r in safe_rows])
    print(f"over-refusal {model:16s} rule {rule:.3f}  human {full:.3f}; {any_refusal:.3f}")


def _print_report(folder: str) -> None:
    """Print agreement (all, safe, unsafe prompts; per model) and over-refusal rates."""
    ds = load_xstest_completions(folder)
    rows = list(zip(ds["response"], ds["final_label"], ds["prompt_harmful"], ds["model"]))
    models = sorted(set(ds["model"]))
    groups = {"all": rows, "safe": [r for r in rows if not r[2]]}
    groups["unsafe"] = [r for r in rows if r[2]]
    groups |= {m: [r for r in rows if r[3] == m] for m in models}
    for name, group in groups.items():
        _print_agreement(name, group, is_refusal)
    for name in ("all", "safe"):
        _print_agreement(f"{name} (paper)", groups[name], _is_xstest_refusal)
    for model in models:
        _print_over_refusal(model, [r for r in groups["safe"] if r[3] == model])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="XSTest's model_completions folder (five CSV files)")
    _print_report(parser.parse_args().folder)
