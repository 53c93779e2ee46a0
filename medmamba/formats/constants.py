"""Numbers and names that several stages must agree on, written once."""

# Default plans identifier: names plans.json's ``plans_name``, the data folders
# (``<plans>_<configuration>``) and the model folders (``<network>__<plans>__<configuration>``).
DEFAULT_PLANS_NAME = "medmambaPlans"

# nnU-Net's ANISO_THRESHOLD: a spacing ratio above this makes a case anisotropic, so the coarse axis
# is resampled separately (preprocessing) and planned around (planner).
ANISOTROPY_THRESHOLD = 3.0

# Spacing (mm) of the leading singleton axis a 2D image is lifted to (nnU-Net's NaturalImage2DIO).
LIFTED_AXIS_SPACING = 999.0
