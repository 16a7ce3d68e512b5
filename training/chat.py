"""Chat rendering shared by every stage, so training, probes and steering see one format.

The study used no system prompt. SmolLM2's chat template injects a default one when the
conversation has none; `strip_default_system_prompt` removes that injection (policy
"none", our default, matching the paper). Artifacts record the policy and a rendered example.
"""

from __future__ import annotations

import re

SYSTEM_PROMPT_POLICIES = ("none", "template")

# Jinja block of the form {% if loop.first and messages[0]['role'] != 'system' %}...{% endif %}
_DEFAULT_SYSTEM_BLOCK = re.compile(
    r"\{%-?\s*if\s+loop\.first\s+and\s+messages\[0\]\[['\"]role['\"]\]\s*!=\s*['\"]system['\"]\s*-?%\}"
    r".*?\{%-?\s*endif\s*-?%\}",
    re.DOTALL,
)


def strip_default_system_prompt(tokenizer) -> bool:
    """Remove a template's injected default system prompt in place; True if one was removed."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return False
    new, n = _DEFAULT_SYSTEM_BLOCK.subn("", template, count=1)
    if n:
        tokenizer.chat_template = new
    return bool(n)


def render_chat(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat text for `messages` (no tokenization)."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def render_up_to_last_assistant(tokenizer, messages: list[dict[str, str]]) -> str:
    """Text ending with the last assistant message's content, without its end-of-turn token.

    Used to read the activation at the final direction letter (docs/study.md: no end-of-turn
    token after the last move).
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's")
    prefix = render_chat(tokenizer, messages[:-1], add_generation_prompt=True)
    return prefix + messages[-1]["content"]
