"""Data sets, partitioners, models, local training and aggregation rules (torch only)."""
