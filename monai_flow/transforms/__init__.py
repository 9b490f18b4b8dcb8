"""monai_flow.transforms."""
