"""Reconstruction of a map from particles with known poses."""
