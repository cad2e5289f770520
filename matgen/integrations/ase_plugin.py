"""Entry point for ASE's plugin discovery (group ``ase.plugins``, read by ASE's experimental
``ase._4.plugins``). Importing this module never fails: where the installed ASE has no plugin
mechanism, it offers nothing."""

from __future__ import annotations

__all__ = ["__ase_plugins__"]

try:
    from ase._4.plugins.plugin import CalculatorPlugin
except ImportError:  # an ASE without the plugin system
    __ase_plugins__: set = set()
else:
    __ase_plugins__ = {
        CalculatorPlugin(
            "matgen",
            citation="matgen MACE-style potential (Batatia et al., NeurIPS 2022)",
            implementation="matgen.integrations.ase.MatgenCalculator",
        )
    }
