"""Custom layers, written in Keras' own shape: __init__ (validated) -> build -> call (keras.ops) -> get_config."""

import keras
import numpy as np
from keras import ops

from pipeline.errors import ConfigError
from pipeline.kernels import BANKS, kernel_bank


@keras.saving.register_keras_serializable(package="pipeline")
class FixedKernelConv2D(keras.layers.Layer):
    """A conv layer whose filters start as a classic bank (Sobel, Gabor) applied to the image's intensity.

    The bank (F, F, 1, K) is spread evenly over the input channels, so on an RGB image each filter
    sees (R + G + B) / 3. With trainable=False it is a fixed feature extractor, as in the lecture's
    "filters as feature extractors"; with trainable=True the bank is only the initialisation.
    """

    def __init__(self, bank: str = "gabor", bank_options: dict | None = None, trainable: bool = False, **kwargs):
        if bank not in BANKS:
            raise ConfigError(f"model.stem={bank!r} is unknown; valid: {', '.join(BANKS)}")
        super().__init__(trainable=trainable, **kwargs)
        self.bank, self.bank_options = bank, dict(bank_options or {})
        self.kernels = kernel_bank(bank, **self.bank_options)

    @property
    def filters(self) -> int:
        return self.kernels.shape[-1]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.kernels.shape[:2]

    def build(self, input_shape):
        channels = input_shape[-1]
        initial = np.repeat(self.kernels, channels, axis=2) / channels
        self.kernel = self.add_weight(
            shape=initial.shape,
            initializer=keras.initializers.Constant(initial),
            trainable=self.trainable,
            name="kernel",
        )

    def call(self, inputs):
        return ops.conv(inputs, self.kernel, strides=1, padding="same")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "bank": self.bank, "bank_options": self.bank_options}
