"""sora: an open training framework for video+audio diffusion transformers."""

__version__ = "0.1.0"
