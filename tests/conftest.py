import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the random tiny Llama; shared, so tests must not modify it."""
    from training.models import tiny_model

    return tiny_model()


@pytest.fixture(scope="session")
def default_model():
    """The real default model (SmolLM2-135M-Instruct), converted once to the cache."""
    from training.models import load_model

    return load_model("smollm2-135m-instruct")
