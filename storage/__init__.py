"""What a run leaves on disk and what reads it back: training checkpoints, generator files and
model folders (checkpoints), model cards (modelcard), the reference's published generators
(published), the code's commit and the libraries' versions (provenance).

Layer 1: may import core/ and the top-level models.py, dataset.py, utils.py, spectral.py; never
metrics/, training/ or a command.
"""
