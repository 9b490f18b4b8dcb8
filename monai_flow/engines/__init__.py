"""monai_flow.engines."""
