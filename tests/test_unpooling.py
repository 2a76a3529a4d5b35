"""Max pooling with switch variables and max-unpooling (the lecture's approximate inverse of pooling)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.errors import ConfigError
from pipeline.models.layers import MaxPoolingWithSwitches2D, MaxUnpooling2D


def reference_unpool_of_pool(x: np.ndarray, p: int = 2) -> np.ndarray:
    """NumPy, window by window: keep each window's max at its argmax, zero the rest."""
    out = np.zeros_like(x)
    b, h, w, c = x.shape
    for n in range(b):
        for i in range(0, h, p):
            for j in range(0, w, p):
                for k in range(c):
                    window = x[n, i : i + p, j : j + p, k]
                    r, s = np.unravel_index(np.argmax(window), window.shape)
                    out[n, i + r, j + s, k] = window[r, s]
    return out


@pytest.mark.parametrize("pool", [2, 3])
def test_unpool_of_pool_keeps_each_max_at_its_argmax_and_zeros_elsewhere(pool):
    x = np.random.default_rng(pool).normal(size=(2, 6 * pool // 2 * 2, 4 * pool, 3)).astype("float32")
    pooled, switches = MaxPoolingWithSwitches2D(pool)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(pooled), keras.layers.MaxPooling2D(pool)(x), atol=0)
    restored = keras.ops.convert_to_numpy(MaxUnpooling2D(pool)([pooled, switches]))
    np.testing.assert_array_equal(restored, reference_unpool_of_pool(x, pool))


def test_ties_switch_to_the_first_maximum_as_argmax_does():
    """After a ReLU most windows tie at 0: the switch is the first position in the window, as NumPy's argmax."""
    x = np.maximum(np.random.default_rng(3).normal(size=(2, 8, 8, 3)), 0).round(0).astype("float32")
    _, switches = MaxPoolingWithSwitches2D(2)(x)
    windows = x.reshape(2, 4, 2, 4, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 4, 4, 3, 4)
    assert (windows == windows.max(-1, keepdims=True)).sum(-1).max() > 1  # ties are there
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(switches), windows.argmax(-1))


def test_gradients_reach_exactly_the_argmax_positions():
    x = tf.Variable(np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32"))
    weights = np.random.default_rng(1).normal(size=(1, 4, 4, 2)).astype("float32")
    with tf.GradientTape() as tape:
        pooled, switches = MaxPoolingWithSwitches2D()(x)
        out = tf.reduce_sum(MaxUnpooling2D()([pooled, switches]) * weights)
    grad = tape.gradient(out, x).numpy()
    at_max = reference_unpool_of_pool(x.numpy()) != 0
    np.testing.assert_allclose(grad[at_max], weights[at_max])
    assert np.all(grad[~at_max] == 0)


def test_model_with_switches_saves_and_loads(tmp_path):
    inputs = keras.Input((8, 8, 2))
    pooled, switches = MaxPoolingWithSwitches2D(name="pool")(inputs)
    model = keras.Model(inputs, MaxUnpooling2D(name="unpool")([keras.layers.Conv2D(2, 1)(pooled), switches]))
    x = np.random.default_rng(2).normal(size=(1, 8, 8, 2)).astype("float32")
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(
        keras.models.load_model(tmp_path / "m.keras").predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_indivisible_input_names_the_layer():
    with pytest.raises(ConfigError, match="layer enc_pool: input 5x4 is not divisible by pool_size 2"):
        MaxPoolingWithSwitches2D(name="enc_pool")(np.zeros((1, 5, 4, 1), "float32"))
