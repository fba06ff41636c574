"""Answering questions with a causal LM: batched greedy generation with left padding and a KV cache."""
from __future__ import annotations

import torch

from product_qa.prompts import prompt_text


@torch.no_grad()
def generate_answers(model, tokenizer, questions: list[str], *, template: str, system_prompt: str | None,
                     max_new_tokens: int, batch_size: int = 8, repetition_penalty: float = 1.15) -> list[str]:
    """Greedy answers, batch by batch. Left padding keeps every prompt's last token next to its answer."""
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers = []
    try:
        for start in range(0, len(questions), batch_size):
            prompts = [prompt_text(tokenizer, q, template, system_prompt) for q in questions[start:start + batch_size]]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    repetition_penalty=repetition_penalty, pad_token_id=tokenizer.pad_token_id,
                                    eos_token_id=tokenizer.eos_token_id)
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            answers.extend(text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return answers
