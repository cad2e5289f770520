"""Structure relaxation: batched FIRE with a cell filter, and the single-structure ASE path."""
