"""monai_flow.networks."""
