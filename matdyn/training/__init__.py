"""Training: WGAN-GP losses, the progressive schedule, the Lightning module, generator
bundles. Import submodules directly (``matdyn.training.bundle`` needs no Lightning)."""
