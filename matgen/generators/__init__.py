"""Generators: equivariant diffusion (crystals, 3D molecules) and language models over text."""
