"""File formats: MRC/MRCS, RELION STAR, cryoSPARC .cs, and the particle-set type."""
