"""Pipelines composing models: the 3D cache, the Lyra student, image-to-world inference."""
