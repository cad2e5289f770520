"""Evaluation metrics for crystals and molecules with the published definitions."""
