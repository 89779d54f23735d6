"""Lyra ROS: the ROS 2 world node (camera images in, rendered robot views out at tf poses).

The node, its message conversions and its tf fallback live here; the GPU core they use is
:mod:`lyra_core`, which imports without ROS.
"""
