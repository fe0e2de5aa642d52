"""graphprune's passes (shipped as graphprune.passes): scoring and calibration, selection,
allocation and targets, rewrite and validation."""
