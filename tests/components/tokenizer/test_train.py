"""The tokenizer stage with a checkpoint: its own tokenizer and template, untrained; ChatML only
where it has no template; a padding token where it has none."""

from __future__ import annotations

from components.chat import CHAT_TEMPLATE, IM_END, IM_START, stop_token_ids
from components.tokenizer.train import adopt_tokenizer
from tests.components.training.tiny import corpus, plain_tokenizer, train_tokenizer

OWN = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}</s>{% endfor %}"


def test_a_checkpoints_own_template_and_vocabulary_are_kept(tmp_path):
    plain_tokenizer(OWN).save_pretrained(tmp_path)
    tokenizer = adopt_tokenizer(tmp_path)
    assert tokenizer.chat_template == OWN
    assert len(tokenizer) == len(plain_tokenizer(OWN))  # nothing added
    assert tokenizer.pad_token == "</s>"  # no padding token: pads with EOS


def test_without_a_template_chatml_is_added_with_its_tokens(tmp_path):
    plain_tokenizer(None).save_pretrained(tmp_path)
    tokenizer = adopt_tokenizer(tmp_path)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert len(tokenizer) == len(plain_tokenizer(None)) + 2
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert tokenizer.convert_ids_to_tokens(tokenizer(text)["input_ids"])[0] == IM_START


def test_chatml_tokens_already_in_the_vocabulary_are_not_added_twice(tmp_path):
    tokenizer = train_tokenizer([corpus()], vocab_size=400, min_frequency=1)
    size = len(tokenizer)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    adopted = adopt_tokenizer(tmp_path)
    assert len(adopted) == size and IM_END in adopted.get_vocab()


def test_a_turn_ends_at_eos_and_at_im_end_where_the_vocabulary_has_it():
    chatml = train_tokenizer([corpus()], vocab_size=400, min_frequency=1)
    assert stop_token_ids(chatml) == [chatml.eos_token_id, chatml.convert_tokens_to_ids(IM_END)]
    plain = plain_tokenizer(None)
    assert stop_token_ids(plain) == [plain.eos_token_id]  # no <|im_end|>: no unknown id
