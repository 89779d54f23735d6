"""Geometry: pinhole cameras, rigid transforms and quaternions, camera trajectories."""
