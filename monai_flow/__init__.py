"""monai-flow: flow-matching denoising and generation for medical imaging, as a MONAI plugin.

Subpackages: ``transforms`` (CT/MR degradation), ``networks`` (velocity networks), ``flows``
(training objectives), ``solvers`` (ODE integrators), ``inferers`` (MONAI inferers),
``engines`` (trainer glue) and ``evaluation`` (scores, reports and figures).
"""

__version__ = "0.1.0"
