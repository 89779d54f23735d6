"""Utilities below every other layer: argument checks, atomic file writes, images and videos."""
