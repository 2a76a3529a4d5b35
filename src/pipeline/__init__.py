"""cnn-pipeline: the CNN lecture as a reproducible Keras + Hydra + MLflow experiment pipeline."""

__version__ = "0.1.0"
