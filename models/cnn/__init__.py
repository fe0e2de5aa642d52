"""Torch implementations of the reference CNNs (imported lazily by ``models``)."""
