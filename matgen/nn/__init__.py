"""Equivariant and invariant neural-network building blocks on e3nn (no Lightning, no CLI)."""
