"""Score models: where the score is read, tokenization, truncation, save/load, text scoring."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close

from constrained_align.models import minilm_dir, tiny_tokenizer
from constrained_align.scoring import ScoreModel, TextScorer
from constrained_align.scoring.score_model import CONFIG_NAME, WEIGHTS_NAME
from constrained_align.utils import current_umask

PROMPTS = ["How do I boil an egg?", "hi", "Tell me a long story about a dragon and a knight."]
RESPONSES = ["Put it in boiling water for nine minutes.", "hello!", "Once upon a time..."]


@pytest.fixture(params=["tiny-encoder", "tiny-decoder"])
def model(request: pytest.FixtureRequest) -> ScoreModel:
    return ScoreModel.from_backbone(request.param, "cost", max_length=96, seed=3).eval()


def test_head_bias_starts_at_zero_and_pooling_follows_architecture(model: ScoreModel) -> None:
    assert model.head.bias.item() == 0.0
    expected = "last" if model.config.decoder else "mean"
    assert model.config.pooling == expected


def test_score_does_not_depend_on_padding(model: ScoreModel) -> None:
    """A padded batch gives each sequence the score it gets alone (right padding)."""
    items = [model.encode(p, r) for p, r in zip(PROMPTS, RESPONSES)]
    with torch.no_grad():
        batched = model(**model.collate(items))
        alone = torch.cat([model(**model.collate([item])) for item in items])
    assert len({len(i.input_ids) for i in items}) == 3  # really padded
    assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_last_pooling_reads_the_eos_position() -> None:
    """Decoders: the end score is the head's value at the EOS that ends every input."""
    model = ScoreModel.from_backbone("tiny-decoder", "reward", seed=1).eval()
    item = model.encode("q", "an answer")
    assert item.input_ids[-1] == model.tokenizer.eos_token_id
    batch = model.collate([item, model.encode("a much longer question here", "x")])
    with torch.no_grad():
        per_token = model.token_scores(**batch)
        end = model(**batch)
    assert end[0].item() == pytest.approx(per_token[0, len(item.input_ids) - 1].item())


def test_mean_pooling_is_the_masked_mean() -> None:
    model = ScoreModel.from_backbone("tiny-encoder", "cost", seed=2).eval()
    batch = model.collate([model.encode("q", "short"), model.encode("q", "a longer reply")])
    with torch.no_grad():
        per_token = model.token_scores(**batch)
        end = model(**batch)
    n0 = int(batch["attention_mask"][0].sum())
    assert end[0].item() == pytest.approx(per_token[0, :n0].mean().item(), abs=1e-6)


def test_encoder_input_is_the_tokenizers_own_pair_encoding() -> None:
    model = ScoreModel.from_backbone("tiny-encoder", "cost")
    tok = model.tokenizer
    item = model.encode("hi", "yo")
    prompt_text = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    expected = tok(prompt_text, "yo")["input_ids"]
    assert item.input_ids == expected
    assert item.token_type_ids is not None
    assert item.token_type_ids[-1] == 1 and item.token_type_ids[0] == 0


def test_context_turns_go_through_the_chat_template() -> None:
    model = ScoreModel.from_backbone("tiny-decoder", "reward")
    context = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply"}]
    text = model.tokenizer.decode(model.encode("second", "answer", context).input_ids)
    assert text == "User: first\nAssistant: reply<eos>\nUser: second\nAssistant: answer<eos>"


def test_decoder_input_matches_the_template_rendering_of_the_reply() -> None:
    """The scored reply is tokenized the way the chat template renders an assistant turn."""
    model = ScoreModel.from_backbone("tiny-decoder", "cost")
    tok = model.tokenizer
    ids = model.encode("q", "answer").input_ids
    full = tok.apply_chat_template(
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "answer"}],
        tokenize=False,
    )
    assert tok.decode(ids) == full.rstrip("\n")
    assert model.encode("q", " answer").input_ids == ids  # no double space


def test_last_pooling_is_the_same_under_left_padding() -> None:
    model = ScoreModel.from_backbone("tiny-decoder", "reward", seed=4).eval()
    items = [model.encode("q", "short"), model.encode("a longer question", "a longer reply")]
    right = model.collate(items)
    n = right["attention_mask"].sum(-1)
    length = right["input_ids"].shape[1]
    left = {k: torch.zeros_like(v) for k, v in right.items()}
    left["input_ids"].fill_(model.tokenizer.pad_token_id)
    for i, k in enumerate(n.tolist()):
        left["input_ids"][i, length - k :] = right["input_ids"][i, :k]
        left["attention_mask"][i, length - k :] = 1
    with torch.no_grad():
        per_token = model.token_scores(**left)
        end = model(**left)
    assert_close(end, per_token[:, -1])  # left padding: the EOS is the final column


def test_truncation_keeps_prompt_end_and_response_start() -> None:
    model = ScoreModel.from_backbone("tiny-decoder", "reward", max_length=40)
    tok = model.tokenizer
    long_prompt = "A" * 50 + "LAST"
    long_response = "FIRST" + "B" * 50
    ids = model.encode(long_prompt, long_response).input_ids
    assert len(ids) == 40
    text = tok.decode(ids)
    assert "LAST\nAssistant: FIRST" in text and text.endswith("<eos>")
    # 39 tokens of budget: the response (" FIRST" + 50 B) is longer, so the prompt keeps half
    # (19 tokens) and the response the other 20: " FIRST" and 14 B.
    assert text.count("B") == 20 - len(" FIRST")
    short = model.encode(long_prompt, "ok").input_ids
    assert len(short) == 40 and tok.decode(short).endswith("ok<eos>")


def test_pad_token_distinct_from_eos_is_added() -> None:
    tok = tiny_tokenizer()
    tok.pad_token = tok.eos_token
    from constrained_align.models.tiny import tiny_causal_lm
    from constrained_align.scoring.score_model import ScoreModelConfig

    assert tok.pad_token_id == tok.eos_token_id
    model = ScoreModel(tiny_causal_lm().model, tok, ScoreModelConfig("cost", "x", "last", 64, True))
    assert tok.pad_token_id != tok.eos_token_id
    assert model.backbone.get_input_embeddings().num_embeddings >= len(tok)
    assert model.backbone.config.pad_token_id == tok.pad_token_id
    item = model.encode("q", "a")
    assert item.input_ids[-1] == tok.eos_token_id


def test_save_and_load_round_trip(model: ScoreModel, tmp_path) -> None:
    with torch.no_grad():
        model.head.bias.fill_(0.25)
    scores = TextScorer(model, progress=False).score(PROMPTS, RESPONSES)
    path = model.save_pretrained(tmp_path / "cm")
    assert (path / WEIGHTS_NAME).is_file()
    assert path.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # not mkdtemp's 0700
    assert "head.weight" in load_file(str(path / WEIGHTS_NAME))
    assert json.loads((path / CONFIG_NAME).read_text())["kind"] == "cost"
    loaded = TextScorer.from_pretrained(path, progress=False)
    assert loaded.kind == "cost"
    assert_close(loaded.score(PROMPTS, RESPONSES), scores, atol=1e-6, rtol=0)
    # Overwriting keeps one complete model and leaves no staging folders behind.
    model.save_pretrained(tmp_path / "cm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm"]


def test_from_pretrained_rejects_a_folder_that_is_not_a_score_model(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        ScoreModel.from_pretrained(tmp_path)


def test_text_scorer_returns_scores_in_input_order(model: ScoreModel) -> None:
    prompts = [f"prompt {i} " + "x" * (7 * i % 23) for i in range(11)]
    responses = [f"reply {i} " + "y" * (5 * i % 17) for i in range(11)]
    batched = TextScorer(model, batch_size=4, progress=False).score(prompts, responses)
    single = torch.stack(
        [
            TextScorer(model, batch_size=1, progress=False).score([p], [r])[0]
            for p, r in zip(prompts, responses)
        ]
    )
    assert batched.shape == (11,) and batched.dtype == torch.float32
    assert_close(batched, single, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        TextScorer(model).score(["a", "b"], ["c"])


def test_minilm_input_is_its_tokenizers_pair_encoding_without_file_padding() -> None:
    """all-MiniLM-L6-v2's tokenizer file pads and truncates to 128; our inputs must not."""
    model = ScoreModel.from_backbone("minilm", "cost", max_length=256)
    tok = model.tokenizer
    item = model.encode("How do I boil an egg?", "Nine minutes in boiling water.")
    prompt_text = tok.apply_chat_template(
        [{"role": "user", "content": "How do I boil an egg?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert item.input_ids == tok(prompt_text, "Nine minutes in boiling water.")["input_ids"]
    assert tok.pad_token_id not in item.input_ids
    long = model.encode("word " * 1000, "reply " * 1000)
    assert len(long.input_ids) == 256 and tok.pad_token_id not in long.input_ids
    # Budget 256 − 3 specials = 253: the prompt keeps ⌊253 / 2⌋ = 126 tokens, the reply 127.
    assert tok.decode(long.input_ids).count("reply") == 127


def test_minilm_backbone_scores_text_offline() -> None:
    """The CPU default backbone loads from its PyPI package folder, without the hub."""
    assert (minilm_dir() / "model.safetensors").is_file()
    model = ScoreModel.from_backbone("minilm", "reward", max_length=64)
    assert not model.config.decoder and model.config.pooling == "mean"
    # 22,713,216 parameters less the unused BERT pooler (384 × 384 + 384 = 147,840).
    assert sum(p.numel() for p in model.backbone.parameters()) == 22_565_376
    scores = TextScorer(model, progress=False).score(PROMPTS, RESPONSES)
    assert scores.shape == (3,) and torch.isfinite(scores).all()


def test_cached_scorer_scores_each_text_once(model: ScoreModel) -> None:
    """With ``cache=True`` repeated texts are not re-scored, and scores are unchanged."""
    plain = TextScorer(model, progress=False).score(PROMPTS, RESPONSES)
    cached = TextScorer(model, progress=False, cache=True)
    calls: list[int] = []
    score_encoded = cached.score_encoded
    cached.score_encoded = lambda items, desc=None: calls.append(len(items)) or score_encoded(items)
    first = cached.score(PROMPTS + PROMPTS[:1], RESPONSES + RESPONSES[:1])
    again = cached.score(PROMPTS[::-1], RESPONSES[::-1])
    assert calls == [3]
    assert_close(first[:3], plain)
    assert_close(first[3], plain[0])
    assert_close(again, plain.flip(0))


def test_scorer_keeping_tokens_tokenizes_each_text_once(model: ScoreModel, monkeypatch) -> None:
    """With ``keep_tokens=True`` the texts are tokenized once and scored afresh each time, so a
    change of weights between two calls shows in the scores."""
    plain = TextScorer(model, progress=False).score(PROMPTS, RESPONSES)
    kept = TextScorer(model, progress=False, keep_tokens=True)
    calls: list[str] = []
    encode = model.encode
    monkeypatch.setattr(model, "encode", lambda p, r, c=None: calls.append(r) or encode(p, r, c))
    assert_close(kept.score(PROMPTS, RESPONSES), plain)
    with torch.no_grad():
        model.head.bias += 1.0
    assert_close(kept.score(PROMPTS, RESPONSES), plain + 1.0)
    assert calls == list(RESPONSES)
