"""Steering models with concept vectors and scoring what they say."""
