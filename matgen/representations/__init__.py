"""Representations of crystals and molecules for models: text codecs, tokenizers, graph features."""
