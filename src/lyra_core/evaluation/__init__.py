"""Evaluation: image metrics and held-out comparisons of worlds against the 3D-cache baseline."""
