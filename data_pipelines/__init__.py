"""Ray Data shells: they place work and move data; the math is in `aetheris_ray` (windows, store)."""
