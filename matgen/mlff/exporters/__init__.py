"""Scripts that run in other projects' environments to export their models for matgen."""
