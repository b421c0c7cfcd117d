"""Run folders: one owner per folder, nothing executes from a folder's files, the library deletes
only what it wrote, and a run that fails says so."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from constrained_align.algorithms import REGISTRY, RunResult
from constrained_align.cli import main
from constrained_align.runner.checkpoint import latest_checkpoint, load_checkpoint
from constrained_align.runner.folder import LOCK, MANIFEST
from constrained_align.utils import UnsafeFileError
from constrained_align.utils.cache import DiskCache
from constrained_align.utils.distributed import Reductions
from tests.reliability.helpers import assert_one_line_error, plant_pickle, run_cli


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``train dpo:tiny`` run folder (copied by each test)."""
    out = tmp_path_factory.mktemp("runs") / "dpo"
    assert main(["train", "dpo:tiny", "--output-dir", str(out), "--quiet"]) == 0
    return out


def copy_run(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def train(out: Path, *extra: str) -> list[str]:
    return ["train", "dpo:tiny", "--output-dir", str(out), "--quiet", *extra]


# ---------------------------------------------------------------- nothing executes from data


def test_planted_checkpoint_is_refused_and_never_runs(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    marker = tmp_path / "RAN"
    plant_pickle(latest_checkpoint(out / "checkpoints") / "state.pt", marker)
    code, err = run_cli(train(out, "--resume"), capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "state.pt", "refused to read this checkpoint")
    assert not marker.exists()


def test_planted_rank_file_is_refused(finished, tmp_path):
    out = copy_run(finished, tmp_path)
    checkpoint = latest_checkpoint(out / "checkpoints")
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    state["world_size"] = 2
    torch.save(state, checkpoint / "state.pt")
    marker = tmp_path / "RAN"
    plant_pickle(checkpoint / "rank-001.pt", marker)

    class SecondOfTwo(Reductions):
        rank, world_size = 1, 2

    with pytest.raises(UnsafeFileError, match=r"rank-001\.pt: refused"):
        load_checkpoint(checkpoint, SecondOfTwo())
    assert not marker.exists()


def test_planted_folded_adapters_are_refused_by_eval(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    marker = tmp_path / "RAN"
    plant_pickle(out / "final" / "folded_adapters.pt", marker)
    code, err = run_cli(["eval", "--model", str(out)], capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "folded_adapters.pt", "refused")
    assert not marker.exists()


def test_planted_cache_entry_is_ignored(tmp_path):
    cache = DiskCache(tmp_path / "cache")
    cache.put("ab" * 32, torch.ones(2))
    marker = tmp_path / "RAN"
    plant_pickle(cache._path("ab" * 32), marker)
    with pytest.warns(UserWarning, match="refused"):
        assert cache.get("ab" * 32) is None
    assert not marker.exists() and cache.misses == 1


def test_damaged_checkpoint_is_one_line(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    state = latest_checkpoint(out / "checkpoints") / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    code, err = run_cli(train(out, "--resume"), capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "state.pt", "damaged")


def test_policy_that_needs_remote_code_is_refused(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    marker = tmp_path / "RAN"
    (model / "config.json").write_text(
        json.dumps({"model_type": "planted", "auto_map": {"AutoConfig": "cfg.PlantedConfig"}})
    )
    (model / "cfg.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    out = tmp_path / "out"
    code, err = run_cli(train(out, "--set", f"policy={model}"), capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "needs its own Python code", "model.trust_remote_code: true")
    assert not marker.exists()


# ---------------------------------------------------------------- one owner per folder


def test_folder_with_foreign_files_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, err = run_cli(train(out), capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "holds files this library did not write (notes.txt)")
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_overwrite_never_replaces_a_foreign_final(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "final").mkdir(parents=True)
    (out / "final" / "weights.bin").write_text("someone else's")
    code, err = run_cli(train(out, "--overwrite"), capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "did not write (final)")
    assert (out / "final" / "weights.bin").read_text() == "someone else's"


def test_overwrite_of_own_run_keeps_foreign_files(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    (out / "notes.txt").write_text("mine")
    assert main(train(out, "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == len(
        (finished / "metrics.jsonl").read_text().splitlines()
    )
    assert "--overwrite: removing" in capsys.readouterr().out


def test_output_dir_that_is_a_file_or_unwritable(tmp_path, capsys):
    file = tmp_path / "a-file"
    file.write_text("x")
    code, err = run_cli(train(file), capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "is a file, not a folder")
    code, err = run_cli(train(file / "below"), capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "cannot write there")


def test_finished_run_is_refused(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    code, err = run_cli(train(out), capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "already holds a run (this run)", "--resume", "--overwrite")


def test_run_with_other_settings_is_refused(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    code, err = run_cli(train(out, "--set", "beta=0.2"), capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, "already holds a run (a run with other settings)")


def test_run_that_died_before_its_first_record_is_restarted(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    for name in ("checkpoints", "final", "summary.json"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    (out / "metrics.jsonl").write_text("")
    assert main(train(out, "--set", "beta=0.3")) == 0
    assert "restarting the run" in capsys.readouterr().out


def test_stale_lock_of_a_killed_process_is_taken_over(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    (out / LOCK).write_text("process 999999 on elsewhere\n")  # left by a killed run
    assert main(train(out, "--overwrite")) == 0
    assert "taking over the lock left by process 999999 on elsewhere" in capsys.readouterr().out
    assert (out / LOCK).read_text() == ""  # released


def test_compare_into_a_train_folder_is_refused(finished, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CONSTRAINED_ALIGN_CACHE", str(tmp_path / "user-cache"))
    out = copy_run(finished, tmp_path)
    code, err = run_cli(["compare", "--preset", "tiny", "--output-dir", str(out)], capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "holds a train run, not a compare run")


def test_damaged_manifest_is_one_line(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    (out / MANIFEST).write_text("{")
    code, err = run_cli(train(out, "--resume"), capsys, tmp_path, own=out)
    assert code == 2
    assert_one_line_error(err, MANIFEST, "damaged")


def test_eval_of_a_folder_that_is_no_run(tmp_path, capsys):
    code, err = run_cli(["eval", "--model", str(tmp_path)], capsys, tmp_path)
    assert code == 2
    assert_one_line_error(err, "not a finished `train` run")


# ---------------------------------------------------------------- training that fails says so


def infinite_costs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cost model gone wrong: every cost is +inf."""
    from constrained_align.scoring import SequenceScorer

    def cost(self, sequences):
        return torch.full((len(sequences),), math.inf, dtype=torch.float64)

    monkeypatch.setattr(SequenceScorer, "cost", cost)


@pytest.mark.parametrize(
    ("key", "sets", "fault", "needles"),
    [
        ("dpo", ["beta=1e30"], None, ["step 1: the gradient norm is inf"]),
        ("ppo_lag", [], infinite_costs, ["the dual's input: a cost observed", "is not finite"]),
        ("c_dpo", [], infinite_costs, ["scoring: a score model's cost of a pair is not finite"]),
    ],
)
def test_diverging_run_stops_and_says_so(key, sets, fault, needles, tmp_path, capsys, monkeypatch):
    if fault is not None:
        fault(monkeypatch)
    out = tmp_path / "out"
    args = ["train", f"{key}:tiny", "--output-dir", str(out), "--quiet"]
    code, err = run_cli(
        [*args, *[x for s in sets for x in ("--set", s)]], capsys, tmp_path, own=out
    )
    assert code == 1, err
    assert_one_line_error(err, *needles)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] in err
    assert not (out / "final").exists()
    latest = latest_checkpoint(out / "checkpoints")
    saved = torch.load(latest / "state.pt", weights_only=True) if latest else None
    assert summary["latest_checkpoint"] == (latest.name if latest else None)
    if saved is not None:  # the last good checkpoint: finite weights
        for tensor in saved["backends"]["policy"]["weights"]["adapter"].values():
            assert torch.isfinite(tensor).all()


def test_weights_that_diverge_stop_the_step():
    """Finite but absurd weights (a normalisation layer can hide them from the loss) stop it."""
    from constrained_align.backends.causal_lm.policy import CausalLMPolicy
    from constrained_align.backends.causal_lm.weights import FullWeights
    from constrained_align.config import OptimConfig
    from constrained_align.models.tiny import tiny_causal_lm, tiny_tokenizer
    from constrained_align.types import TrainingError

    backend = CausalLMPolicy(
        FullWeights(tiny_causal_lm(0)), tiny_tokenizer(), optim=OptimConfig(name="sgd", lr=10.0)
    )
    weight = backend.trainable()[0]
    with pytest.raises(TrainingError, match=r"step 1: a trained weight reached .*diverged"):
        backend.step(lambda: 1e8 * weight.sum())


def test_a_run_that_took_no_step_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(REGISTRY["dpo"], "train", lambda config, ctx: RunResult(lam=None))
    out = tmp_path / "out"
    code, err = run_cli(train(out), capsys, tmp_path, own=out)
    assert code == 1
    assert_one_line_error(err, "dpo took no optimizer step")
    assert "took no optimizer step" in json.loads((out / "summary.json").read_text())["failed"]
