"""graphprune's passes: scoring, selection, rewrite and validation (shipped as graphprune.passes)."""
