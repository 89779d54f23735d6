"""Gaussian scenes: the 3DGS parameterisation, PLY files, RGB-D unprojection, procedural rooms."""
