"""Concept vectors (v_Mold, v_Gold, v_Path), layer choice and analyses.

The public names load on first use, so `probes.catalog` and `probes.protocol` import without torch.
"""

# decoder_layers: public here since the first release; it lives with the other model-structure helpers
_PUBLIC = {"ConceptVectors": "probes.vectors", "LAYER_CONVENTION": "probes.layers", "decoder_layers": "training.structure"}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'probes' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_PUBLIC[name]), name)
