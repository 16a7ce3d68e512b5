"""Steering the real default model along a happy-minus-sad direction moves self-report sentiment."""

import pytest
import torch

from steering.scoring import sentiment_score
from steering.steerer import steered_generate
from training.chat import render_up_to_last_assistant
from training.models import load_model


@pytest.mark.integration
def test_happy_direction_moves_sentiment():
    model, tok = load_model("smollm2-135m-instruct")
    layer = 20

    def mean_act(texts):
        acts = []
        for x in texts:
            text = render_up_to_last_assistant(tok, [{"role": "user", "content": "How are you?"}, {"role": "assistant", "content": x}])
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                acts.append(model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0, -1])
        return torch.stack(acts).mean(0)

    v = mean_act(["I feel wonderful, happy and full of joy.", "I love this, everything is going perfectly."]) - mean_act(
        ["I feel terrible, sad and hopeless.", "I hate this, everything is going wrong."]
    )
    v = v / v.norm() * 8
    prompts = ["How are you feeling right now?", "Are you happy?"]
    down = steered_generate(model, tok, prompts, v, layer, -4.0, max_new_tokens=16)
    up = steered_generate(model, tok, prompts, v, layer, 4.0, max_new_tokens=16)
    assert sum(map(sentiment_score, up)) > sum(map(sentiment_score, down)) + 2.0, (up, down)
