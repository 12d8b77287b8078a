"""ENSAM training: data synthesis, interaction simulation, optimizers and runs."""
