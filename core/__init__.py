"""The ground floor: what the reference's own files (models.py, dataset.py, spectral.py) and every
command stand on; it stands on utils.py alone.

Holds: one-line errors, checked numbers and the --device/--precision flags (cli), RGB and
network-scale Lab both ways with grids and image files (pictures), the two forms of a convolution
(convolutions), folders of photographs (folders), exact batch-norm statistics (calibration).

Layer 0, together with the top-level models.py, dataset.py, utils.py and spectral.py: these may
import one another, without a cycle (utils.py imports none of them), and never metrics/, storage/,
training/ or a command.
"""
