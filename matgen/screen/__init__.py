"""Screening: deduplication, relaxation, energy above hull, novelty, and the results store."""
