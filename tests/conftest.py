import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ALL_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads(request):
    """One thread for the tiny model (overhead-bound: OpenMP synchronisation costs more than it
    saves, badly so when the cores are shared); all cores for tests of the real model."""
    torch.set_num_threads(ALL_THREADS if request.node.get_closest_marker("integration") else 1)
    yield


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


@pytest.fixture(scope="module")
def lm():
    """A fresh tiny model with larger weights (random init gives near-constant outputs), so replies and
    log-odds depend on the prompt and on steering and equality tests can actually fail."""
    from training.models import tiny_model

    model, tok = tiny_model()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, tok
