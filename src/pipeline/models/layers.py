"""Custom layers, written in Keras' own shape: __init__ (validated) -> build -> call (keras.ops) -> get_config."""

import keras
import numpy as np
from keras import ops

from pipeline.errors import ConfigError
from pipeline.lecture.kernels import BANKS, kernel_bank


@keras.saving.register_keras_serializable(package="pipeline")
class FixedKernelConv2D(keras.layers.Layer):
    """A conv layer whose filters start as a classic bank (Sobel, Gabor, centre-surround DoG) applied to the
    image's intensity.

    The bank (F, F, 1, K) is spread evenly over the input channels, so on an RGB image each filter
    sees (R + G + B) / 3. With trainable=False it is a fixed feature extractor, as in the lecture's
    "filters as feature extractors"; with trainable=True the bank is only the initialisation.
    """

    def __init__(self, bank: str = "gabor", bank_options: dict | None = None, trainable: bool = False, **kwargs):
        if bank not in BANKS:
            raise ConfigError(f"model.stem={bank!r} is unknown; valid: {', '.join(BANKS)}")
        super().__init__(trainable=trainable, **kwargs)
        self.bank, self.bank_options = bank, dict(bank_options or {})
        try:
            self.kernels = kernel_bank(bank, **self.bank_options)
        except ConfigError as err:  # name the config key: model.stem_options.<argument>
            raise ConfigError(f"model.stem_options.{err}") from None
        except TypeError as err:
            raise ConfigError(f"model.stem_options={self.bank_options} do not fit the {bank} bank: {err}") from None

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


def _windows(x, pool: int):
    """(B, H, W, C) -> (B, H/p, W/p, C, p*p): the pooling windows, flattened row-major."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height // pool, pool, width // pool, pool, channels))
    x = ops.transpose(x, (0, 1, 3, 5, 2, 4))
    return ops.reshape(x, (-1, height // pool, width // pool, channels, pool * pool))


class _PoolSizeLayer(keras.layers.Layer):
    """Shared by pooling and unpooling: a validated, serialized pool_size."""

    def __init__(self, pool_size: int = 2, **kwargs):
        if not isinstance(pool_size, int) or pool_size < 2:
            raise ConfigError(f"pool_size={pool_size!r} is invalid: must be an integer >= 2")
        super().__init__(**kwargs)
        self.pool_size = pool_size

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="pipeline")
class MaxPoolingWithSwitches2D(_PoolSizeLayer):
    """p x p max pooling (stride p) that also returns the "switch variables": where in each window the max was.

    Outputs [pooled (B, H/p, W/p, C), switches (B, H/p, W/p, C) int32 in 0..p*p-1, row-major in the
    window]. MaxUnpooling2D uses the switches to put values back where they came from (Zeiler & Fergus
    2013; Badrinarayanan et al., SegNet, 2017).
    """

    def call(self, inputs):
        height, width = inputs.shape[1:3]
        if height % self.pool_size or width % self.pool_size:
            raise ConfigError(
                f"layer {self.name}: input {height}x{width} is not divisible by pool_size {self.pool_size}"
            )
        windows = _windows(inputs, self.pool_size)
        pooled = ops.max(windows, axis=-1)
        # the first position holding the max (argmax's answer), written without argmax: TensorFlow's float
        # argmax lowers to a Bitcast, which neither ONNX nor LiteRT's builtin ops have (pipeline.commands.export)
        size = self.pool_size * self.pool_size
        at_max = ops.equal(windows, ops.expand_dims(pooled, -1))
        first = ops.min(ops.where(at_max, ops.arange(size, dtype="int32"), size), axis=-1)
        return pooled, ops.minimum(first, size - 1)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        shape = (b, h // self.pool_size, w // self.pool_size, c)
        return shape, shape


@keras.saving.register_keras_serializable(package="pipeline")
class MaxUnpooling2D(_PoolSizeLayer):
    """Inverse of MaxPoolingWithSwitches2D: each value goes back to its switch position; the rest are zeros.

    Max pooling is not invertible; with the switches recorded this is the best approximate inverse,
    the lecture's "unpooling with switch variables". Gradients flow to the values (not to the switches).
    """

    def call(self, inputs):
        values, switches = inputs
        p = self.pool_size
        _, height, width, channels = values.shape
        spread = ops.one_hot(switches, p * p, dtype=values.dtype) * ops.expand_dims(values, -1)
        spread = ops.reshape(spread, (-1, height, width, channels, p, p))
        spread = ops.transpose(spread, (0, 1, 4, 2, 5, 3))
        return ops.reshape(spread, (-1, height * p, width * p, channels))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape[0]
        return (b, h * self.pool_size, w * self.pool_size, c)


@keras.saving.register_keras_serializable(package="pipeline")
class MirrorPadding2D(keras.layers.Layer):
    """Reflect-pad height and width: the U-Net paper's overlap-tile context for an unpadded network."""

    def __init__(self, padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1)), **kwargs):
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(p) for p in side) for side in padding)

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        return ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        b, h, w, c = input_shape
        return (b, None if h is None else h + top + bottom, None if w is None else w + left + right, c)

    def get_config(self):
        return {**super().get_config(), "padding": self.padding}


@keras.saving.register_keras_serializable(package="pipeline")
class ImagenetPreprocessing(keras.layers.Layer):
    """Raw pixels in [0, 255] -> what a keras.applications network was trained on; a grey image is
    repeated to three channels. mode 'tf': [-1, 1] (MobileNetV2); 'caffe': BGR minus the ImageNet mean
    (ResNet50, VGG16); 'none': unchanged (EfficientNet rescales inside)."""

    MODES = ("tf", "caffe", "none")
    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str = "tf", **kwargs):
        if mode not in self.MODES:
            raise ConfigError(f"preprocessing mode {mode!r} is unknown; valid: {', '.join(self.MODES)}")
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if x.shape[-1] == 1:
            x = ops.repeat(x, 3, axis=-1)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(self.CAFFE_MEAN_BGR, dtype=x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
