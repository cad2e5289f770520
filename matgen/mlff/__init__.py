"""Machine-learned force fields: the MACE-style potential, its outputs and checkpoints."""
