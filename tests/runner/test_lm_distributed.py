"""The online loop under ``accelerate launch`` with two CPU processes (gloo).

Each process rolls out half of every step's prompts; the costs are pooled for λ, gradients are
averaged, and only the main process writes the run folder. A two-process run interrupted after
two steps and resumed with ``--resume`` ends bit-identical to a straight two-process run, which
exercises the per-process checkpoint files (each process's sampling generator and RNG).
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
    a = load_file(run / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def two_processes() -> Reductions:
    r = Reductions()
    r.world_size = 2
    return r


def test_data_parallel_launches_take_online_keys_with_whole_prompt_shards():
    check_processes(load_run_config("ppo_lag:tiny"), two_processes())
    with pytest.raises(ConfigError, match="mocan runs in one process"):
        check_processes(load_run_config("mocan:tiny"), two_processes())
    odd = load_run_config("grpo_lag:tiny", ["prompts_per_step=3"])
    with pytest.raises(ConfigError, match="prompts_per_step = 3 must be a multiple of the 2"):
        check_processes(odd, two_processes())
    check_processes(odd, Reductions())  # one process takes any count
