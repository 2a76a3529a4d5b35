"""What the trainer, optimizer, transfer and export configs may choose: the names only (no Keras import), so
the schema (pipeline.config.schema) answers a bad override before TensorFlow loads. The runtime maps each
name to its implementation (pipeline.deploy.exporting.FORMATS has exactly EXPORT_FORMATS, tested)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multi_worker")
LR_SCALING = ("linear", "sqrt", "none")
SCHEDULES = ("constant", "cosine")
TRANSFER_STRATEGIES = ("scratch", "feature_extraction", "fine_tune", "full")
EXPORT_FORMATS = ("saved_model", "onnx", "litert")
