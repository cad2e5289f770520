"""ASE integration: :class:`MatgenCalculator` (defined in :mod:`matgen.mlff.calculator`, where the
relaxers below the integration layer can use it) and the plugin entry point in
:mod:`matgen.integrations.ase_plugin`."""

from __future__ import annotations

from matgen.mlff.calculator import MatgenCalculator

__all__ = ["MatgenCalculator"]
