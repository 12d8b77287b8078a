"""Local scoring that reproduces the CVPR 2025 interactive-segmentation evaluator."""
