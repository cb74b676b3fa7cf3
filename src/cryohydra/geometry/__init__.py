"""Rotations, sampling on SO(3) and alignment."""
