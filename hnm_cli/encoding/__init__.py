"""Turning texts into vectors: the model registry (packaged weights), encoders, devices, and loaders of models to fine-tune."""
