"""Training: the runtime (precision, distribution, optimizer), resume and backups, callbacks, and the
library behind the train and transfer stages (pipeline.training.fit)."""

from pipeline.training.runtime import (
    LR_SCALING,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
    Distribution,
    Throughput,
    build_optimizer,
    configure_distribution,
    configure_runtime,
    learning_rate,
    native_bfloat16_cpu,
    resolve_precision,
)

__all__ = [
    "LR_SCALING",
    "OPTIMIZERS",
    "PRECISIONS",
    "STRATEGIES",
    "Distribution",
    "Throughput",
    "build_optimizer",
    "configure_distribution",
    "configure_runtime",
    "learning_rate",
    "native_bfloat16_cpu",
    "resolve_precision",
]
