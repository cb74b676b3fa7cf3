"""cryohydra: ab-initio single-particle cryo-EM reconstruction."""

__version__ = "0.1.0"
