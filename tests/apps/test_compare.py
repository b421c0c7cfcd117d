"""``constrained-align compare --preset tiny`` end to end, its stage cache, and ``eval``.

The tiny comparison trains tiny-encoder score models on the embedded data (cached in a
per-test user cache), seven keys on the random tiny decoder, evaluates the eight models and
writes the report. Rerunning skips every finished stage; ``eval --model`` on one of its runs
with the same prompt settings reproduces the comparison's own figures for that model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from constrained_align.algorithms import load_run_config
from constrained_align.apps import compare as compare_mod
from constrained_align.apps.compare import load_compare_config
from constrained_align.cli import main
from constrained_align.config import ConfigError
from constrained_align.runner.build import build_policy, load_trained_policy

TINY_EVAL = ["helpful_prompts=4", "harmful_prompts=4", "xstest_prompts=4", "max_new_tokens=12"]
METRICS = ("reward", "cost", "harmful_ratio", "over_refusal", "kl", "tokens", "seconds")


@pytest.fixture(scope="module")
def tiny_comparison(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSTRAINED_ALIGN_CACHE", str(root / "user-cache"))
        assert (
            main(["compare", "--preset", "tiny", "--output-dir", str(root / "out"), "--quiet"]) == 0
        )
    return root


def test_tiny_comparison_writes_report_results_and_plots(tiny_comparison):
    out = tiny_comparison / "out"
    results = json.loads((out / "results.json").read_text())
    expected = load_compare_config("tiny").algorithms
    assert [m["name"] for m in results["models"]] == expected
    for model in results["models"]:
        for mode in ("greedy", "sampled"):
            assert set(METRICS) <= set(model["eval"][mode])
            assert model["eval"][mode]["samples"] == 12  # 4 + 4 + 4 prompts, one answer each
            scores = model["scores"][mode]
            assert len(scores["reward"]) == len(scores["cost"]) == 8  # helpful + harmful
        assert len(model["examples"]) == 3
    by_name = {m["name"]: m for m in results["models"]}
    assert by_name["reference"]["eval"]["sampled"]["kl"] == 0.0
    assert by_name["reference"]["lambda"] is None and by_name["dpo"]["lambda"] is None
    for key in ("ppo_lag", "grpo_lag", "c_dpo"):
        assert by_name[key]["lambda_trajectory"], key
        assert by_name[key]["train"]["generated_tokens"] > 0
    assert results["versions"]["torch"] and results["seeds"] == {"runs": 0, "eval": 0}
    # the calibrated limit lies strictly between the reference samples' mean smallest cost and
    # their mean cost, and every key with a multiplier was trained to it
    c = results["cost_limit_calibration"]
    assert c["reference_mean_smallest_cost"] < results["cost_limit"] < c["reference_mean_cost"]
    assert results["cost_limit"] == pytest.approx(
        (c["reference_mean_smallest_cost"] + c["reference_mean_cost"]) / 2
    )
    for key in ("ppo_lag", "grpo_lag", "c_dpo", "mocan"):
        assert results["runs"][key]["train"]["dual"]["cost_limit"] == results["cost_limit"]
    # the same example prompts for every model
    prompts = {tuple(e["prompt"] for e in m["examples"]) for m in results["models"]}
    assert len(prompts) == 1
    report = (out / "report.md").read_text()
    for name in expected:
        assert f"| {name} |" in report and f"**{name}**:" in report
    for name in ("scatter", "lambda", "frontier"):
        png = out / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plots/{name}.png" in report
    assert {s["cached"] for s in results["scorers"].values()} == {False}


def test_tiny_comparison_reports_intervals_differences_and_judges(tiny_comparison):
    """Per-prompt records for every model, set and mode; every figure with a bootstrap
    interval; paired differences against the reference and dpo; the tiny judges beside the
    trained proxies; the report's "What this shows" paragraph and difference tables."""
    out = tiny_comparison / "out"
    results = json.loads((out / "results.json").read_text())
    assert results["judges"]["independent"] == {"reward": True, "cost": True}
    assert results["bootstrap"]["resamples"] == 2000
    for model in results["models"]:
        for mode in ("greedy", "sampled"):
            records = model["records"][mode]
            for name in ("helpful", "harmful"):
                assert {len(v) for v in records[name].values()} == {4}, (model["name"], name)
                assert {"reward", "cost", "judge_reward", "judge_cost", "refusal"} <= set(
                    records[name]
                )
            assert set(records["xstest"]) == {"refusal"} and len(records["xstest"]["refusal"]) == 4
            ev, stats = model["eval"][mode], model["statistics"][mode]
            for key in ("judge_reward", "judge_cost", "judge_harmful_ratio", "cost", "reward"):
                s = stats[key]
                assert s["low"] <= s["value"] <= s["high"] and s["n"] in (4, 8), key
                assert s["value"] == pytest.approx(ev[key]), key
        if model["name"] != "reference":
            expected = {"reference"} | ({"dpo"} if model["name"] != "dpo" else set())
            assert set(model["differences"]) == expected
        assert len(model["records"]["sampled"]["harmful"]["kl"]) == 4
    by_name = {m["name"]: m for m in results["models"]}
    assert set(by_name["reference"]["records"]["sampled"]["harmful"]["kl"]) == {0.0}
    report = (out / "report.md").read_text()
    assert "## What this shows" in report and "### Paired differences against dpo" in report
    assert "| c_dpo − reference |" in report and "judged harmful ↓" in report


def test_rerun_reuses_every_stage(tiny_comparison, monkeypatch):
    """A second run trains nothing: the scorers come from the user cache, the runs and
    evaluations from the output folder."""
    out = tiny_comparison / "out"
    before = json.loads((out / "results.json").read_text())

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setenv("CONSTRAINED_ALIGN_CACHE", str(tiny_comparison / "user-cache"))
    monkeypatch.setattr(compare_mod, "train_lm", refuse)
    monkeypatch.setattr(compare_mod, "train_scorer", refuse)
    monkeypatch.setattr(compare_mod, "evaluate_policy", refuse)
    assert main(["compare", "--preset", "tiny", "--output-dir", str(out), "--quiet"]) == 0
    after = json.loads((out / "results.json").read_text())
    assert {s["cached"] for s in after["scorers"].values()} == {True}
    assert [m["eval"] for m in after["models"]] == [m["eval"] for m in before["models"]]


def test_other_settings_in_the_same_folder_are_refused(tiny_comparison, monkeypatch):
    monkeypatch.setenv("CONSTRAINED_ALIGN_CACHE", str(tiny_comparison / "user-cache"))
    out = str(tiny_comparison / "out")
    args = ["compare", "--preset", "tiny", "--output-dir", out, "--set", "cost_limit=0.5"]
    assert main(args) == 2


def test_eval_command_reproduces_the_comparison_figures(tiny_comparison, tmp_path):
    out = tiny_comparison / "out"
    args = ["eval", "--model", str(out / "runs" / "ppo_lag"), "--output", str(tmp_path / "e.json")]
    for item in TINY_EVAL:
        args += ["--set", item]
    assert main(args) == 0
    alone = json.loads((tmp_path / "e.json").read_text())
    inside = json.loads((out / "eval" / "ppo_lag.json").read_text())
    for mode in ("greedy", "sampled"):
        for key in METRICS[:-1]:
            assert alone["eval"][mode][key] == pytest.approx(inside["eval"][mode][key], abs=1e-9)
    assert alone["primal_dual"] is not None


def test_unknown_key_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown algorithm 'ppo_lagg'"):
        load_compare_config("tiny", ['algorithms=["reference", "ppo_lagg"]'])


def test_saved_policy_with_a_folded_reference_loads_bit_identically(tmp_path):
    """SACPO folds its stage-1 adapter into the base weights; the final folder keeps the
    folded adapters, so the loaded policy equals the trained one exactly."""
    config = load_run_config("sacpo:tiny")
    backend = build_policy(config)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in backend.trainable():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        backend.set_reference_to_policy()
        for p in backend.trainable():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    backend.save_pretrained(str(tmp_path / "final"))
    loaded = load_trained_policy(config, tmp_path / "final")
    seqs = backend.sample(
        compare_mod.load_eval_prompts(load_compare_config("tiny").eval).harmful, 1, seed=0
    ).sequences
    with torch.no_grad():
        for reference in (False, True):
            a = backend.logprobs(seqs, reference=reference).token
            b = loaded.logprobs(seqs, reference=reference).token
            assert torch.equal(a, b), reference


def test_testbed_comparison_has_the_exact_optimum_as_a_row(tmp_path):
    out = tmp_path / "tb"
    assert (
        main(["compare", "--testbed", "--algorithms", "mocan", "dpo", "--output-dir", str(out)])
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    names = [m["name"] for m in results["models"]]
    assert names == ["π* (exact optimum)", "reference", "mocan", "dpo"]
    exact = {m["name"]: m["eval"]["exact"] for m in results["models"]}
    assert exact["π* (exact optimum)"]["tv_to_optimum"] == 0.0
    assert exact["mocan"]["tv_to_optimum"] < 1e-6  # mocan reaches π* on the testbed
    assert exact["dpo"]["cost"] > results["cost_limit"]  # helpfulness alone breaks the limit
    report = (out / "report.md").read_text()
    assert "| π* (exact optimum) |" in report and "**mocan** targets π*: met" in report
    assert all((out / "plots" / f"{n}.png").stat().st_size > 0 for n in ("scatter", "frontier"))
