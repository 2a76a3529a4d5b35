"""The one place that asks the backend for gradients: everything else in pipeline.interpret.probes is keras.ops.

Two primitives: the gradient of a function with respect to its input, and an activation whose backward
pass is "guided" (Springenberg et al. 2015). Both exist for the tensorflow and jax backends.
"""

from collections.abc import Callable

import keras

from pipeline.errors import ConfigError

SUPPORTED = ("tensorflow", "jax")


def _backend() -> str:
    backend = keras.config.backend()
    if backend not in SUPPORTED:
        raise ConfigError(f"KERAS_BACKEND={backend!r} has no gradient code here; valid: {', '.join(SUPPORTED)}")
    return backend


def input_gradient(fn: Callable, x):
    """(fn(x), d sum(fn(x)) / dx): the value and the input gradient of a function of a tensor."""
    x = keras.ops.convert_to_tensor(x, "float32")
    if _backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
            total = tf.reduce_sum(value)
        return value, tape.gradient(total, x)
    import jax

    def total_and_value(v):
        value = fn(v)
        return keras.ops.sum(value), value

    (_, value), grad = jax.value_and_grad(total_and_value, has_aux=True)(x)
    return value, grad


def guided(activation: Callable) -> Callable:
    """`activation` forwards as usual; backwards it passes only positive gradients: dy · f'(x) where dy > 0.

    For ReLU this is guided backpropagation (gradient where the input and the incoming gradient are both
    positive); for other activations (LeNet-5's tanh) the same rule is applied to their own derivative.
    """
    if _backend() == "tensorflow":
        import tensorflow as tf

        @tf.custom_gradient
        def guided_tf(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = activation(x)

            def backward(dy):
                return tf.where(dy > 0, tape.gradient(y, x, output_gradients=dy), tf.zeros_like(x))

            return y, backward

        return guided_tf
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def guided_jax(x):
        return activation(x)

    def forward(x):
        return jax.vjp(activation, x)

    def backward(vjp, dy):
        (dx,) = vjp(dy)
        return (jnp.where(dy > 0, dx, 0.0),)

    guided_jax.defvjp(forward, backward)
    return guided_jax
