"""tools/trl_judge.py: the offline zen stand-in loads as TRL's tests load it, and test outcomes
are read from pytest's junit report (the model stand-ins need SmolLM2 and are built by the
tool itself)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from datasets import load_dataset

TOOL = Path(__file__).resolve().parents[1] / "tools" / "trl_judge.py"


def _tool():
    spec = importlib.util.spec_from_file_location("trl_judge", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zen_stand_in_loads_by_configuration_and_split(tmp_path):
    tool = _tool()
    folder = tmp_path / "trl-internal-testing" / "zen"
    tool.build_zen(folder)
    for name in tool.CONFIGS:
        data = load_dataset(str(folder), name)
        assert (len(data["train"]), len(data["test"])) == (17, 2), name
    preference = load_dataset(str(folder), "conversational_preference", split="train")
    assert preference.column_names == ["prompt", "chosen", "rejected"]
    assert preference[0]["chosen"][0]["role"] == "assistant"
    unpaired = load_dataset(str(folder), "standard_unpaired_preference", split="train")
    assert unpaired["label"][:3] == [False, True, False]


def test_outcomes_read_a_junit_report(tmp_path):
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="t.A" name="ok"/>'
        '<testcase classname="t.A" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="t.A" name="broken"><error message="y"/></testcase>'
        '<testcase classname="t.A" name="skip"><skipped message="z"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert _tool().outcomes(report) == {
        "t.A::ok": "passed",
        "t.A::bad": "failed",
        "t.A::broken": "failed",
        "t.A::skip": "skipped",
    }
