"""Concept vectors (v_Mold, v_Gold, v_Path), layer choice and analyses."""

from probes.layers import LAYER_CONVENTION
from probes.vectors import ConceptVectors
from training.structure import decoder_layers  # public here since the first release; it lives with the other model-structure helpers

__all__ = ["ConceptVectors", "LAYER_CONVENTION", "decoder_layers"]
