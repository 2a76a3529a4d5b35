"""Deployment: a model's contract (`contract`: input, value range, intensity mapping, classes, output, lineage,
carried by every logged model and export), a trained model in the formats deployment tools take (SavedModel,
ONNX, LiteRT), each run by its own runtime and checked against Keras (`exporting`), and the MLflow
python_function that serves a logged model with its preprocessing in any process (`serving`).

May import data (the intensity mapping a served model applies), models (custom layers), tracking.
"""
