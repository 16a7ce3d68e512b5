import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ALL_THREADS = torch.get_num_threads()

# `make test-fast` leaves these out (`-m "not slow and not integration and not browser"`); `make test` runs all.
SLOW_MODULES = {"test_reproduce", "test_plant_controls", "test_calibrate", "test_probes_analyze", "test_training_rl",
                "test_mechanics_matched", "test_hardening", "test_cli_env", "test_families"}


def pytest_collection_modifyitems(config, items):
    """Mark whole pipelines and training runs (modules above, tests named *smoke*) slow, the browser test browser."""
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        if module == "test_demo_browser":
            item.add_marker(pytest.mark.browser)
        elif module in SLOW_MODULES or "smoke" in item.name:
            item.add_marker(pytest.mark.slow)


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
