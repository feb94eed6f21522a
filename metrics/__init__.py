"""How good a colorization is, and how a run went: the table of measures, each one's title, format
and which way is better (measures), the per-pixel measures and colourfulness (scores), the scoring
classifier with semantic accuracy and classifier FD (classifier), FID through the field's
Inception (fid), the one evaluation validation and test.py score through (evaluation), a
distribution head's decoding chosen on held-out images (decoding), test.py's printed tables and
results page (report), training curves from a
run's logs (curves), the saturation dial's frontier (frontier).

Layer 1: may import core/ and the top-level models.py, dataset.py, utils.py, spectral.py; never
storage/, training/ or a command.
"""
