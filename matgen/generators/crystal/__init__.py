"""Crystal generation by joint diffusion over atom types, fractional coordinates and lattice:
the data layout, unit-cell canonicalisation and the CSPNet denoiser."""
