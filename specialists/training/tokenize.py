"""Chat records to token ids with labels on the assistant turns only.

Each assistant turn's span is found by rendering the conversation up to it with the generation
prompt (where the answer starts) and up to its end, with the model's own chat template: the
loss then covers exactly what the model will have to produce when served (its end-of-turn
token included), and never the prompt, the system text or the user's words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specialists.training.records import ChatRecord

IGNORE = -100  # the label cross-entropy skips


@dataclass(frozen=True)
class EncodedExample:
    ids: list[int]
    labels: list[int]

    @property
    def target_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _render(tokenizer: Any, turns: list[dict[str, str]], *, generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        turns, add_generation_prompt=generation_prompt, return_dict=True
    )
    return [int(i) for i in encoded["input_ids"]]


def encode_record(tokenizer: Any, record: ChatRecord) -> EncodedExample:
    """Token ids of the whole chat; labels copy the ids inside assistant turns, else IGNORE."""
    turns = [{"role": t.role, "content": t.content} for t in record.messages]
    ids = _render(tokenizer, turns, generation_prompt=False)
    labels = [IGNORE] * len(ids)
    for index, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        prefix = _render(tokenizer, turns[:index], generation_prompt=True)
        through = _render(tokenizer, turns[: index + 1], generation_prompt=False)
        start, end = len(prefix), len(through)
        if ids[:start] != prefix or ids[:end] != through:
            # The template renders a turn differently once more turns follow (or tokens merge
            # across the answer's edge): the labels would be shifted, so refuse.
            raise ValueError(
                f"the chat template does not render turn {index + 1} the same way inside the "
                "whole conversation; cannot tell where the answer starts"
            )
        # A template may add a newline after the end-of-turn token: it is not the model's to say.
        while (
            end > start
            and ids[end - 1] != tokenizer.eos_token_id
            and _is_space(tokenizer, ids[end - 1])
        ):
            end -= 1
        labels[start:end] = ids[start:end]
    return EncodedExample(ids=ids, labels=labels)


def _is_space(tokenizer: Any, token: int) -> bool:
    return not tokenizer.decode([token]).strip()


def pad_batch(examples: list[EncodedExample], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors for a training step (padding is masked and never a label)."""
    import torch

    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
