"""The views derived from canonical rows, on hand-built rows with exact expected outputs."""

from __future__ import annotations

import logging

from constrained_align.data import (
    harmlessness_pairs,
    helpfulness_pairs,
    labelled_responses,
    pairs_to_dataset,
    unique_prompts,
)

CTX = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]


def row(prompt, r0, r1, better, safer, safe0, safe1, context=()):
    return {
        "prompt": prompt,
        "response_0": r0,
        "response_1": r1,
        "better_response_id": better,
        "safer_response_id": safer,
        "is_response_0_safe": safe0,
        "is_response_1_safe": safe1,
        "context": list(context),
        "source": "hand",
    }


ROWS = pairs_to_dataset(
    [
        row("A", "a0", "a1", 1, 0, True, False),  # safer id given
        row("B", "b0", "b1", 0, None, False, True),  # no safer id, labels differ → b1 safer
        row("C", "c0", "c1", 0, None, True, True),  # labels equal → unranked, order kept
        row("D", "d0", "d1", None, 1, None, None),  # harmless-only (HH harmless-base)
        row("E", "e0", "e1", 1, None, None, None),  # helpful-only: no harm information
        row("F", "f0", "f1", 0, None, None, False, CTX),  # one label → unranked
        row("A", "a0", "a2", 0, 1, False, True),  # a0 again, other label: a0 is dropped
    ]
)


def test_helpfulness_pairs():
    ds = helpfulness_pairs(ROWS)
    assert ds.column_names == ["prompt", "context", "chosen", "rejected"]
    assert ds.to_list() == [
        {"prompt": "A", "context": [], "chosen": "a1", "rejected": "a0"},
        {"prompt": "B", "context": [], "chosen": "b0", "rejected": "b1"},
        {"prompt": "C", "context": [], "chosen": "c0", "rejected": "c1"},
        {"prompt": "E", "context": [], "chosen": "e1", "rejected": "e0"},
        {"prompt": "F", "context": CTX, "chosen": "f0", "rejected": "f1"},
        {"prompt": "A", "context": [], "chosen": "a0", "rejected": "a2"},
    ]


def test_harmlessness_pairs():
    ds = harmlessness_pairs(ROWS)
    assert ds.column_names == [
        "prompt", "context", "unsafer", "safer", "unsafer_sign", "safer_sign", "ranked"
    ]  # fmt: skip
    assert ds.features["unsafer_sign"].dtype == "int8"
    got = [(r["prompt"], r["unsafer"], r["safer"], r["unsafer_sign"], r["safer_sign"], r["ranked"])
           for r in ds]  # fmt: skip
    assert got == [
        ("A", "a1", "a0", 1, -1, True),
        ("B", "b0", "b1", 1, -1, True),
        ("C", "c0", "c1", -1, -1, False),
        ("D", "d0", "d1", 0, 0, True),
        ("F", "f0", "f1", 0, 1, False),
        ("A", "a0", "a2", 1, -1, True),
    ]
    assert ds[4]["context"] == CTX


def test_labelled_responses_drop_conflicting_labels(caplog):
    with caplog.at_level(logging.WARNING, logger="constrained_align.data.schema"):
        ds = labelled_responses(ROWS)
    assert ds.column_names == ["prompt", "context", "response", "is_safe"]
    # a0 is labelled safe in the first row and unsafe in the last: neither label is kept.
    assert ds.to_list() == [
        {"prompt": "A", "context": [], "response": "a1", "is_safe": False},
        {"prompt": "B", "context": [], "response": "b0", "is_safe": False},
        {"prompt": "B", "context": [], "response": "b1", "is_safe": True},
        {"prompt": "C", "context": [], "response": "c0", "is_safe": True},
        {"prompt": "C", "context": [], "response": "c1", "is_safe": True},
        {"prompt": "F", "context": CTX, "response": "f1", "is_safe": False},
        {"prompt": "A", "context": [], "response": "a2", "is_safe": True},
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "labelled_responses: dropped 1 responses labelled safe in one row and unsafe in another"
    ]


def test_labelled_responses_deduplicate_agreeing_labels(caplog):
    rows = pairs_to_dataset(
        [
            row("Q", "x", "y", None, 0, True, False),
            row("Q", "x", "z", None, None, True, True),  # x again, same label: one row
            row("Q", "y", "w", None, None, True, None, CTX),  # same text, other context
            row("R", "x", "v", None, None, False, None),  # same text, other prompt
        ]
    )
    with caplog.at_level(logging.WARNING, logger="constrained_align.data.schema"):
        got = [
            (r["prompt"], r["response"], r["is_safe"], r["context"])
            for r in labelled_responses(rows)
        ]
    assert got == [
        ("Q", "x", True, []),
        ("Q", "y", False, []),
        ("Q", "z", True, []),
        ("Q", "y", True, CTX),
        ("R", "x", False, []),
    ]
    assert not caplog.records


def test_unique_prompts_distinguishes_context():
    rows = pairs_to_dataset(
        [
            row("Q", "x", "y", 0, None, None, None),
            row("Q", "x", "z", 1, None, None, None),
            row("Q", "x", "y", 0, None, None, None, CTX),
            row("R", "x", "y", 0, None, None, None),
        ]
    )
    assert unique_prompts(rows).to_list() == [
        {"prompt": "Q", "context": []},
        {"prompt": "Q", "context": CTX},
        {"prompt": "R", "context": []},
    ]


def test_empty_views_keep_their_features():
    empty = pairs_to_dataset([row("E", "e0", "e1", 1, None, None, None)])
    assert len(harmlessness_pairs(empty)) == 0
    assert harmlessness_pairs(empty).features["ranked"].dtype == "bool"
    assert len(labelled_responses(empty)) == 0
