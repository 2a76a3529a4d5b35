"""Work-arounds for upstream bugs, each applied only where it is needed and named after its issue.

Keras 3's TensorFlow trainer does not run under tf.distribute.MultiWorkerMirroredStrategy
(keras-team/keras#20585, tensorflow/tensorflow#72388), for two reasons fixed here:
1. before the first step, `fit` reduces a whole distributed input batch with `strategy.reduce("MEAN", batch)`,
   which the collective strategy rejects for a nested structure; the build only needs shapes and dtypes,
   so this takes them from the local replica's part of the batch;
2. each step reduces the (scalar) loss and metric values with `strategy.reduce("MEAN", v, axis=0)`, which fails
   for scalars; they are reduced across workers with `axis=None` instead (the mean over replicas).
"""

import tensorflow as tf
from keras.src import tree
from keras.src.backend.tensorflow import trainer as tf_trainer

_original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
_original_reduce = tf_trainer.reduce_per_replica


def _local_part(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _build_from_local_batch(self, iterator=None, data_batch=None):
    if iterator is None or self._distribute_strategy is None:
        return _original_build(self, iterator, data_batch)
    for _, _, batches in iterator:
        batch = next(batches)
        break
    strategy = self.distribute_strategy
    with strategy.scope():
        self._symbolic_build(data_batch=tree.map_structure(lambda v: _local_part(strategy, v), batch))


def _reduce_scalars_too(values, strategy, reduction="auto"):
    if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
        return tree.map_structure(
            lambda v: strategy.reduce("MEAN", v, axis=None) if tf_trainer._is_per_replica_instance(v) else v, values
        )
    return _original_reduce(values, strategy, reduction)


def patch_keras_for_multi_worker() -> None:
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _build_from_local_batch
    tf_trainer.reduce_per_replica = _reduce_scalars_too
