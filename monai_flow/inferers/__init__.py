"""monai_flow.inferers."""
