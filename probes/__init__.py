"""Concept vectors (v_Mold, v_Gold, v_Path), layer choice and analyses."""

from probes.layers import LAYER_CONVENTION, decoder_layers
from probes.vectors import ConceptVectors

__all__ = ["ConceptVectors", "LAYER_CONVENTION", "decoder_layers"]
