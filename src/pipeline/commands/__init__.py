"""The stages behind `cnn <command>` (train, prepare, evaluate, predict, visualize, analyze, transfer,
transfer-study, export, register, compare, bench) and the `cnn` console command itself.

A command is thin: Hydra composes its config (pipeline.config.stage_main), the schema checks it, and the
command turns it into plain arguments for the library below. A command may import any folder of the
library, and imports it inside `main`, so `--help` and `--cfg job` answer before TensorFlow loads; no command
imports another, and nothing below imports a command (tests/test_layers.py).
"""
