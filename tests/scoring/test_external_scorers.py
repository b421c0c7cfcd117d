"""Score models trained elsewhere: Safe RLHF's ``LlamaForScore`` layout (beaver reward and cost
models) and one-label ``*ForSequenceClassification`` checkpoints, built tiny here (no download).

Safe RLHF's end score, written out by hand: run the backbone alone on one unpadded sequence
``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{response}<eos>``, take the hidden state
``h`` of its last token and return ``w·h + b`` with the checkpoint's ``score_head``. A padded
batch must give every sequence that same number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch.testing import assert_close
from transformers import BertConfig, BertForSequenceClassification, LlamaForSequenceClassification

from constrained_align.config import ConfigError
from constrained_align.models import RemoteCodeError, tiny_causal_lm, tiny_tokenizer
from constrained_align.models.tiny import tiny_encoder
from constrained_align.scoring import TextScorer
from constrained_align.scoring.external import ExternalScoreModel, fit, load_external
from constrained_align.scoring.loading import describe_scorer, load_scorer

PROMPTS = ["How do I boil an egg?", "hi", "Tell me a long story about a dragon."]
RESPONSES = ["Put it in boiling water for nine minutes.", "hello!", "Once upon a time"]
CONTEXT = [{"role": "user", "content": "hey"}, {"role": "assistant", "content": "hello"}]


def write_beaver(folder: Path, *, score_type: str = "cost", weights: str = "safetensors"):
    """A tiny Safe RLHF score-model folder: config.json with the extra fields, the Llama
    backbone under ``model.``, ``score_head`` with a bias, and the normalizer's buffers."""
    backbone = tiny_causal_lm(seed=5).model.eval()
    torch.manual_seed(6)
    head = torch.nn.Linear(backbone.config.hidden_size, 1)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    state |= {f"score_head.{k}": v for k, v in head.state_dict().items()}
    state |= {"normalizer.mean": torch.tensor([3.0]), "normalizer.var": torch.tensor([4.0])}
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    folder.mkdir(parents=True)
    if weights == "safetensors":
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    elif weights == "sharded":
        shards = {"model-1.safetensors": {}, "model-2.safetensors": {}}
        for i, (key, value) in enumerate(state.items()):
            shards["model-2.safetensors" if i % 2 else "model-1.safetensors"][key] = value
        for name, part in shards.items():
            save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map = {k: n for n, part in shards.items() for k in part}
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    config = backbone.config.to_dict()
    config.update(
        architectures=["LlamaForScore"],
        score_dim=1,
        score_type=score_type,
        bias=True,
        do_normalize=False,
        normalizer_type="ExponentialMovingAverage",
        momentum=0.9,
        mean=[3.0],
        var=[4.0],
    )
    (folder / "config.json").write_text(json.dumps(config))
    tiny_tokenizer().save_pretrained(folder)
    return backbone, head


@pytest.fixture(scope="module")
def beaver(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("beaver") / "cost"
    backbone, head = write_beaver(folder)
    return folder, backbone, head


@torch.no_grad()
def by_hand(backbone, head, texts: list[str]) -> torch.Tensor:
    """Safe RLHF's end score of each text, computed alone (no padding)."""
    tok = tiny_tokenizer()
    out = []
    for text in texts:
        ids = torch.tensor([tok(text)["input_ids"]])
        hidden = backbone(input_ids=ids).last_hidden_state[0, -1]  # (H,)
        out.append(head(hidden).squeeze())
    return torch.stack(out)


def test_beaver_renders_the_safe_rlhf_template(beaver):
    folder, _, _ = beaver
    model = load_external(str(folder), "cost")
    tok = model.tokenizer
    item = model.encode("Why?", "Because.", CONTEXT)
    expected = (
        "BEGINNING OF CONVERSATION: USER: hey ASSISTANT:hello<eos>"
        "USER: Why? ASSISTANT:Because.<eos>"
    )
    assert tok.decode(item.input_ids) == expected
    assert item.input_ids[-1] == tok.eos_token_id


def test_beaver_end_scores_match_a_hand_computation_at_any_padding(beaver):
    folder, backbone, head = beaver
    scorer = TextScorer.from_pretrained(folder, kind="cost", batch_size=3, progress=False)
    assert scorer.kind == "cost" and isinstance(scorer.model, ExternalScoreModel)
    texts = [
        f"BEGINNING OF CONVERSATION: USER: {p} ASSISTANT:{r}<eos>"
        for p, r in zip(PROMPTS, RESPONSES)
    ]
    batched = scorer.score(PROMPTS, RESPONSES)
    assert len({len(t) for t in texts}) == 3  # three lengths: the batch really is padded
    assert_close(batched, by_hand(backbone, head, texts), atol=1e-5, rtol=1e-5)
    # raw end scores: the normalizer's mean 3 and var 4 are not applied
    alone = torch.cat([scorer.score([p], [r]) for p, r in zip(PROMPTS, RESPONSES)])
    assert_close(batched, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("weights", ["sharded", "bin"])
def test_beaver_loads_from_sharded_safetensors_and_tensor_only_bin(tmp_path, weights):
    backbone, head = write_beaver(tmp_path / "m", weights=weights)
    scorer = TextScorer.from_pretrained(tmp_path / "m", kind="cost", progress=False)
    text = f"BEGINNING OF CONVERSATION: USER: {PROMPTS[0]} ASSISTANT:{RESPONSES[0]}<eos>"
    got = scorer.score(PROMPTS[:1], RESPONSES[:1])
    assert_close(got, by_hand(backbone, head, [text]), atol=1e-5, rtol=1e-5)


def test_beaver_kind_comes_from_score_type_and_a_mismatch_is_refused(beaver):
    folder, _, _ = beaver
    assert load_external(str(folder), None).config.kind == "cost"
    with pytest.raises(ConfigError, match=r"config\.json: score_type is 'cost'.*reward"):
        load_external(str(folder), "reward")
    with pytest.raises(ConfigError, match=r"scorers\.reward: .*score_type"):
        load_scorer(str(folder), "reward", batch_size=2, progress=False)


def test_load_scorer_and_describe_scorer_take_a_beaver_folder(beaver):
    folder, backbone, head = beaver
    scorer = load_scorer(str(folder), "cost", batch_size=2, progress=False)
    assert isinstance(scorer, TextScorer) and scorer.kind == "cost"
    text = f"BEGINNING OF CONVERSATION: USER: {PROMPTS[1]} ASSISTANT:{RESPONSES[1]}<eos>"
    got = scorer.score(PROMPTS[1:2], RESPONSES[1:2])
    assert_close(got, by_hand(backbone, head, [text]), atol=1e-5, rtol=1e-5)
    line = describe_scorer(str(folder), "cost")
    assert "Safe RLHF score model" in line and "LlamaForScore" in line


def test_over_long_inputs_keep_the_prompt_end_the_response_start_and_eos(beaver):
    folder, _, _ = beaver
    model = load_external(str(folder), "cost", max_length=40)
    item = model.encode("a" * 100 + "END", "START" + "b" * 100)
    text = model.tokenizer.decode(item.input_ids)
    assert len(item.input_ids) == 40
    assert text.endswith("<eos>") and "END ASSISTANT:START" in text
    assert fit([9, 1, 2, 3, 4, 5, 6, 9], [9, 1, 2, 3], 6, {9}) == [9, 2, 3, 4, 5, 9]


def write_classifier(folder: Path, labels: int = 1) -> LlamaForSequenceClassification:
    """A tiny Llama classifier saved by ``save_pretrained``, with a chat-template tokenizer."""
    config = tiny_causal_lm().config
    config.num_labels = labels
    torch.manual_seed(7)
    model = LlamaForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return model


def test_sequence_classifier_scores_are_its_logits_at_any_padding(tmp_path):
    reference = write_classifier(tmp_path / "rm")
    scorer = TextScorer.from_pretrained(tmp_path / "rm", kind="reward", batch_size=3)
    assert scorer.model.config.text_format == "chat_template"
    tok = tiny_tokenizer()
    expected = []
    with torch.no_grad():
        for p, r in zip(PROMPTS, RESPONSES):
            chat = [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
            text = tok.apply_chat_template(chat, tokenize=False)
            batch = tok(text, add_special_tokens=False, return_tensors="pt")
            expected.append(reference(**batch).logits[0, 0])
    assert_close(scorer.score(PROMPTS, RESPONSES), torch.stack(expected), atol=1e-5, rtol=1e-5)


def test_encoder_classifier_without_chat_template_reads_a_text_pair(tmp_path):
    tok = tiny_tokenizer(encoder=True)
    tok.chat_template = None
    config = BertConfig(**{**tiny_encoder().config.to_dict(), "num_labels": 1})
    torch.manual_seed(8)
    reference = BertForSequenceClassification(config).eval()
    reference.save_pretrained(tmp_path / "cm")
    tok.save_pretrained(tmp_path / "cm")
    scorer = load_scorer(str(tmp_path / "cm"), "cost", batch_size=3, progress=False)
    assert scorer.model.config.text_format == "text_pair"
    with torch.no_grad():
        expected = torch.cat(
            [
                reference(**tok(p, r, return_tensors="pt")).logits[:, 0]
                for p, r in zip(PROMPTS, RESPONSES)
            ]
        )
    assert_close(scorer.score(PROMPTS, RESPONSES), expected, atol=1e-5, rtol=1e-5)


def test_two_label_classifier_and_unnamed_kind_are_refused(tmp_path):
    write_classifier(tmp_path / "two", labels=2)
    with pytest.raises(ConfigError, match=r"two/config\.json: .*num_labels 2"):
        load_scorer(str(tmp_path / "two"), "cost", batch_size=2, progress=False)
    with pytest.raises(ConfigError, match="num_labels 2"):
        describe_scorer(str(tmp_path / "two"), "cost")
    write_classifier(tmp_path / "one")
    with pytest.raises(ConfigError, match="name its kind"):
        TextScorer.from_pretrained(tmp_path / "one")


def test_other_folders_are_refused_without_running_their_code(tmp_path):
    tiny_causal_lm().save_pretrained(tmp_path / "lm")
    with pytest.raises(ConfigError, match="not a saved score-model folder"):
        load_scorer(str(tmp_path / "lm"), "reward", batch_size=2, progress=False)
    planted = tmp_path / "planted"
    write_beaver(planted)
    config = json.loads((planted / "config.json").read_text())
    config |= {"model_type": "planted", "auto_map": {"AutoConfig": "conf.PlantedConfig"}}
    (planted / "config.json").write_text(json.dumps(config))
    (planted / "conf.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').write('ran')\n")
    with pytest.raises(RemoteCodeError, match="trust_remote_code"):
        load_scorer(str(planted), "cost", batch_size=2, progress=False)
    assert not (tmp_path / "RAN").exists()
