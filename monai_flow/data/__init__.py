"""monai_flow.data."""
