"""Training volumes generated on the fly.

Modules: ``label_maps`` (atlas label maps, downsampled and cached), ``shapes`` (procedural
blobs, tubes, sheets, cells), ``synth`` (SynthSeg-style image synthesis and deformation),
``sampler`` (``VolumeSampler`` mixing the sources, ``pick_target``).
"""
