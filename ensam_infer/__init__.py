"""ENSAM inference: a promptable 3D segmentation model (box + clicks) and the challenge I/O."""
