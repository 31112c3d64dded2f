"""Ray Serve deployment graph of Aetheris-Ray.

``deployments.app:build_app`` is the typed app builder (`AppArgs`) that both
``serve run deployments/serve_config.yaml`` and ``aetheris serve`` use.
"""
