"""ENSAM in napari: box and click prompts on an image layer, the answer in a Labels layer.

`controller` holds everything that needs neither Qt nor napari (prompt bookkeeping, undo,
world-to-voxel conversion, the reader and the sample phantom); `widget` wires it to a viewer.
Install with `pip install "ensam[napari]"`; the plugin is found through `napari.yaml`.
"""
