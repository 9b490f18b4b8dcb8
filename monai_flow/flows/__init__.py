"""monai_flow.flows."""
