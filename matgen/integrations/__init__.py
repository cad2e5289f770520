"""Integrations with other toolkits: the ASE calculator."""
