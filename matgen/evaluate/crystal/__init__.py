"""Crystal metrics with the CDVAE / DiffCSP / MatterGen definitions."""
