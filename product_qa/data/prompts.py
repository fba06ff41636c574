"""Question phrasings: how a person asks about a product title.

Training examples use the TRAINING phrasings; validation and test examples use the HELD_OUT ones, which
training never sees, so evaluation measures whether the model answers new wordings, not memorized ones.
The phrasing of each example is picked deterministically from its product key and the seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from product_qa.errors import UserError
from product_qa.hashing import mix64

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Phrasing:
    id: str
    language: str
    template: str  # contains {title}

    def question(self, title: str) -> str:
        return self.template.format(title=title)


TRAINING_PHRASINGS: tuple[Phrasing, ...] = (
    Phrasing("what_is", "en", "What is {title}?"),
    Phrasing("describe", "en", "Describe {title}."),
    Phrasing("tell_me_product", "en", "Tell me about the product {title}."),
    Phrasing("description_of", "en", "What is the description of {title}?"),
    Phrasing("can_you_describe", "en", "Can you describe {title}?"),
    Phrasing("pt_o_que_e", "pt", "O que é {title}?"),
    Phrasing("pt_descreva", "pt", "Descreva o produto {title}."),
)

HELD_OUT_PHRASINGS: tuple[Phrasing, ...] = (
    Phrasing("info_about", "en", "I'd like some information about {title}."),
    Phrasing("what_know", "en", "What do you know about {title}?"),
    Phrasing("pt_fale_sobre", "pt", "Fale-me sobre {title}."),
)

SPLIT_PHRASINGS = {"train": TRAINING_PHRASINGS, "validation": HELD_OUT_PHRASINGS, "test": HELD_OUT_PHRASINGS}
PHRASING_LANGUAGES = tuple(sorted({p.language for p in TRAINING_PHRASINGS}))


def view_phrasings(languages: str) -> tuple[Phrasing, ...]:
    """The training phrasings in the languages listed (comma-separated, e.g. "en,pt")."""
    wanted = {language.strip() for language in languages.split(",")}
    return tuple(p for p in TRAINING_PHRASINGS if p.language in wanted)


def pick_phrasing(pool: tuple[Phrasing, ...], product_hash: int, seed: int) -> Phrasing:
    """The same product and seed always get the same phrasing; products spread evenly over the pool."""
    return pool[mix64(product_hash ^ mix64(seed)) % len(pool)]


def build_example(uid: str, title: str, answer: str, phrasing: Phrasing) -> dict:
    """One question->answer example; the chat template is applied later, by the training stage. `messages` holds
    its user and assistant turns (the system prompt is a training setting, added in the training views)."""
    question = phrasing.question(title)
    return {"uid": uid, "title": title, "question": question, "answer": answer,
            "phrasing": phrasing.id, "language": phrasing.language, "messages": chat_messages(question, answer)}


def chat_messages(question: str, answer: str | None = None, system_prompt: str | None = None) -> list[dict[str, str]]:
    """The chat turns of an example, in the {"role", "content"} form chat templates, TRL and LLaMA-Factory read:
    the system prompt (if any), the question (which may hold a record: context_question), the answer (if any)."""
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    turns.append({"role": "user", "content": question})
    if answer is not None:
        turns.append({"role": "assistant", "content": answer})
    return turns


PLAIN_TEMPLATE = "Question: {question}\nAnswer:"  # for base models without a chat template


def resolve_template(tokenizer: PreTrainedTokenizerBase, requested: str) -> str:
    """"chat" (the model's own chat template) or "plain" (PLAIN_TEMPLATE); "auto" picks chat when there is one."""
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if requested == "chat" and not has_chat:
        raise UserError("the model's tokenizer has no chat template: set train.prompt_template=plain (or auto)")
    return "chat" if requested == "chat" or (requested == "auto" and has_chat) else "plain"


# The question with a product record (title, then description) before it: what the RAG systems and the
# assistant ask, and what training's context views teach the fine-tuned model to read (data/catalog.py)
CONTEXT_TEMPLATE = "Product record:\n{record}\n\nQuestion: {question}"


def record_text(title: str, description: str) -> str:
    """A product record as the model reads it in a prompt."""
    return f"{title}\n{description}"


def context_question(question: str, record: str) -> str:
    return CONTEXT_TEMPLATE.format(record=record, question=question)


def cut_to_tokens(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    """`text` cut to at most max_tokens tokens of the tokenizer. A cut inside a multi-byte character decodes to
    U+FFFD, which is dropped."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max(max_tokens, 0)]).rstrip("\ufffd")


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str, template: str, system_prompt: str | None) -> str:
    """The text the model sees before its answer (`question` may hold a record: context_question)."""
    if template == "plain":
        return PLAIN_TEMPLATE.format(question=question)
    return tokenizer.apply_chat_template(chat_messages(question, system_prompt=system_prompt), tokenize=False,
                                         add_generation_prompt=True)


def answer_text(answer: str, template: str) -> str:
    """The answer as it follows the prompt (after "Answer:" a space separates the words)."""
    return f" {answer}" if template == "plain" else answer
