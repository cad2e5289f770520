"""PyTorch Lightning modules and data modules for every model (the only Lightning users)."""
