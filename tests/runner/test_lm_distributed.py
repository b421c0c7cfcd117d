"""The training loop under ``accelerate launch`` with two CPU processes (gloo, DDP).

For an offline key (c_dpo) and an online key (ppo_lag) on the tiny presets: two processes
each working on half of every batch end where one process on the whole batch ends, and so does
one process with two accumulated micro-batches per step (weights and λ to 1e-5). A two-process
run interrupted after two steps and resumed with ``--resume`` ends bit-identical to a straight
two-process run, which exercises the per-process checkpoint files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from constrained_align.algorithms import load_run_config
from constrained_align.cli import main
from constrained_align.config import ConfigError
from constrained_align.runner.train import check_processes
from constrained_align.utils.distributed import Reductions

INTERRUPT_AFTER_TWO_RECORDS = textwrap.dedent(
    """
    import sys
    from constrained_align.cli import main
    from constrained_align.runner import log as lm_run

    original = lm_run.RunLog.__call__

    def call(self, record):
        original(self, record)
        if len(self.records) == 2:
            raise KeyboardInterrupt

    lm_run.RunLog.__call__ = call
    sys.exit(main(sys.argv[1:]))
    """
)


def launch(*program: str, cwd: Path) -> subprocess.CompletedProcess:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = Path(sys.executable).with_name("accelerate")
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(port), *program]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)


def records(run: Path) -> list[dict]:
    timing = ("time/", "tokens/s")
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if not k.startswith(timing)} for x in lines]


TRAIN = ["-m", "constrained_align", "train", "ppo_lag:tiny", "--quiet", "--set", "steps=4"]
ACCUMULATE = ["--set", "engine.gradient_accumulation_steps=2"]


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "adapter_model.safetensors")


def assert_same_run(a: Path, b: Path) -> None:
    """The same λ at every record (keys with a multiplier) and the same trained adapter, to
    1e-5."""
    lams = [[r.get("dual/lambda", 0.0) for r in records(run)] for run in (a, b)]
    assert len(lams[0]) == len(lams[1]) > 0
    torch.testing.assert_close(lams[0], lams[1], rtol=0, atol=1e-5)
    wa, wb = adapter(a), adapter(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-5)


def one_process(tmp_path: Path, name: str, *args: str) -> Path:
    assert main(["train", *args, "--quiet", "--output-dir", str(tmp_path / name)]) == 0
    return tmp_path / name


#: Batches of 5 pairs (24 pairs: 5, 5, 5, 5, 4): two processes get 3 and 2 pairs of a batch,
#: so the step must weigh each process's rows by their share.
C_DPO = ["c_dpo:tiny", "--set", "data.pair_batch_size=5"]


def test_c_dpo_on_two_processes_or_two_micro_batches_equals_one_process(tmp_path):
    program = ["-m", "constrained_align", "train", *C_DPO, "--quiet", "--output-dir", "two"]
    two = launch(*program, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["engine"]["distributed_type"] == "MULTI_CPU"
    assert summary["engine"]["processes"] == 2
    one = one_process(tmp_path, "one", *C_DPO)
    assert_same_run(one, tmp_path / "two")
    assert_same_run(one, one_process(tmp_path, "accumulated", *C_DPO, *ACCUMULATE))
    lams = [r["dual/lambda"] for r in records(one)]
    assert len(set(lams)) > 1  # λ moved, so equal trajectories say something


def test_two_process_run_resumes_bit_identically(tmp_path):
    straight = launch(*TRAIN, "--output-dir", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert straight.stdout.count("Training ppo_lag") == 1  # the main process reports
    run = tmp_path / "straight"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["optimizer_steps"] == 4
    logged = records(run)
    prompts = load_run_config("ppo_lag:tiny").task.prompts_per_step
    per_prompt = load_run_config("ppo_lag:tiny").task.samples_per_prompt
    # four records, each over the whole step (both processes' samples), λ moving every step
    assert [r["step"] for r in logged] == [0, 1, 2, 3]
    assert all(r["rollout/samples"] == prompts * per_prompt for r in logged)
    lams = [r["dual/lambda"] for r in logged]
    assert len(set(lams)) == 4
    checkpoint = sorted((run / "checkpoints").iterdir())[-1]
    assert {p.name for p in checkpoint.glob("rank-*.pt")} == {"rank-000.pt", "rank-001.pt"}

    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_AFTER_TWO_RECORDS)
    cut = launch(str(script), *TRAIN[2:], "--output-dir", "resumed", cwd=tmp_path)
    assert cut.returncode != 0 and "KeyboardInterrupt" in cut.stderr
    resumed = launch(*TRAIN, "--output-dir", "resumed", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert records(tmp_path / "resumed") == logged
    a, b = adapter(run), adapter(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # the same run in one process, and in one process with two micro-batches per step
    assert_same_run(one_process(tmp_path, "one", *TRAIN[3:]), run)
    assert_same_run(one_process(tmp_path, "accumulated", *TRAIN[3:], *ACCUMULATE), run)


def two_processes() -> Reductions:
    r = Reductions()
    r.world_size = 2
    return r


def test_data_parallel_launches_take_every_key_and_online_keys_need_whole_prompt_shares():
    for key in ("ppo_lag", "mocan", "c_dpo", "pecan"):
        check_processes(load_run_config(f"{key}:tiny"), two_processes())
    odd_pairs = load_run_config("c_dpo:tiny", ["data.pair_batch_size=3"])
    check_processes(odd_pairs, two_processes())  # pairs are weighted by their share
    odd = load_run_config("grpo_lag:tiny", ["prompts_per_step=3"])
    with pytest.raises(ConfigError, match="prompts_per_step = 3 must be a multiple of the 2"):
        check_processes(odd, two_processes())
    check_processes(odd, Reductions())  # one process takes any count


def test_a_loss_that_drops_pairs_is_split_by_the_pairs_it_keeps(tmp_path):
    """safe_dpo drops the pairs whose responses are both unsafe and averages over the rest, so
    micro-batches (and processes) count by their share of the kept pairs."""
    one = one_process(tmp_path, "one", "safe_dpo:tiny")
    assert_same_run(one, one_process(tmp_path, "two", "safe_dpo:tiny", *ACCUMULATE))
