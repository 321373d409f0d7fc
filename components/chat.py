"""The chat format every stage and the serving side share: special tokens and the template.

Ground floor: imported by the tokenizer stage (which bakes it into the tokenizer), the model
config (stop tokens), evaluation and the pretraining worker; it imports nothing of the project.
"""

from __future__ import annotations

from typing import Final

EOS: Final = "<|endoftext|>"  # document separator in pretraining, end of generation
PAD: Final = "<|pad|>"
IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"  # end of a chat turn; also a stop token for generation
SPECIAL_TOKENS: Final = (EOS, PAD, IM_START, IM_END)

# ChatML. `{% generation %}` marks assistant tokens so trainers can mask the loss to responses.
CHAT_TEMPLATE: Final = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def stop_token_ids(tokenizer) -> list[int]:
    """The ids that end an assistant turn: EOS and `<|im_end|>` where the vocabulary has it (a
    checkpoint's own tokenizer may lack it and end its turns with EOS)."""
    ids = [tokenizer.eos_token_id, tokenizer.get_vocab().get(IM_END)]
    return list(dict.fromkeys(i for i in ids if i is not None))
