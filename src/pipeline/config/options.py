"""What the configs may choose, the one place each vocabulary is written: the names only (no Keras import), so
the schema (pipeline.config.schema) answers a bad override before TensorFlow loads, and the library checks
and iterates over the same tuples. The runtime maps each
name to its implementation (pipeline.deploy.exporting.FORMATS has exactly EXPORT_FORMATS, tested)."""

OPTIMIZERS = ("adam", "adamw", "sgd")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "mirrored", "multi_worker")
LR_SCALING = ("linear", "sqrt", "none")
SCHEDULES = ("constant", "cosine")
TRANSFER_STRATEGIES = ("scratch", "feature_extraction", "fine_tune", "full")
EXPORT_FORMATS = ("saved_model", "onnx", "litert")
SPLITS = ("train", "val", "test")
INTENSITY_MODES = ("auto", "range", "percentile")  # data.intensity.mode (pipeline.data.pixels)
CACHE_MODES = ("auto", "memory", "none")  # data.cache
FITS = ("stretch", "crop")  # data.fit
PREDICT_MODES = ("resize", "tile")  # predict's mode
TILE_BLENDS = ("gaussian", "flat")  # predict's tile_blend
TTA_MODES = ("none", "flips", "dihedral")  # tta: test-time views (pipeline.tasks.tta.VIEWS has exactly these)
