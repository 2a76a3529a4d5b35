"""Conv-layer arithmetic from the lecture: output sizes, parameter counts, receptive fields, FLOPs.

Receptive fields follow Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019: for a layer with kernel k (dilated: d(k-1)+1), stride s and left padding p,
    r_out = r_in + (k - 1) j_in,   j_out = j_in s,   start_out = start_in + ((k - 1)/2 - p) j_in,
where r is the receptive field size, j the jump (effective stride) and start the centre of the first
output's field in input pixels. Where paths merge (Add, Concatenate) the field is the largest one.
"""

import math
from dataclasses import dataclass

import keras

from pipeline.errors import ConfigError


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int | str = 0, layer: str = "conv") -> int:
    """W2 = (W1 - F + 2P) / S + 1 — for convolution and pooling alike.

    padding may be an int P, 'valid' (P = 0: only whole windows) or 'same' (output = ceil(W1 / S), the
    Keras/TF rule, with whatever padding that takes). Raises when the windows do not tile the input
    exactly or nothing is left, naming the layer.
    """
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "valid":
        padding = 0
    if not isinstance(padding, int) or padding < 0:
        raise ConfigError(f"layer {layer}: padding={padding!r} is invalid: must be 'same', 'valid' or an integer >= 0")
    span = size - kernel + 2 * padding
    if span < 0:
        raise ConfigError(
            f"layer {layer}: a {kernel}x{kernel} window does not fit a {size}-pixel input with padding {padding}"
        )
    if span % stride:
        raise ConfigError(
            f"layer {layer}: output size ({size} - {kernel} + 2*{padding}) / {stride} + 1 = {span / stride + 1:g} is "
            f"not an integer; choose W1, F, P, S so that W1 - F + 2P is divisible by S"
        )
    return span // stride + 1


def transposed_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, output_padding: int = 0) -> int:
    """Conv2DTranspose ('deconvolution'): W2 = (W1 - 1) S - 2P + F + output_padding, the inverse of the conv formula."""
    return (size - 1) * stride - 2 * padding + kernel + output_padding


def conv_params(kernel: int, channels_in: int, filters: int, bias: bool = True) -> int:
    """K filters of F x F x C_in weights (+ one bias each), shared over every position."""
    return filters * (kernel * kernel * channels_in + int(bias))


def dense_params(inputs: int, outputs: int, bias: bool = True) -> int:
    """A fully-connected layer: every input connected to every output."""
    return outputs * (inputs + int(bias))


def conv_vs_dense(height: int, width: int, channels: int, kernel: int, filters: int) -> dict[str, int]:
    """Parameters of a 'same' conv layer vs a dense layer mapping the same input volume to the same output volume."""
    conv = conv_params(kernel, channels, filters)
    dense = dense_params(height * width * channels, height * width * filters)
    return {"conv": conv, "dense": dense, "ratio": dense // conv}


def stacked_small_filters(channels: int, large: int = 7, small: int = 3) -> dict[str, int]:
    """One large×large conv vs the stack of small convs with the same receptive field (no biases).

    For 7 vs 3x3: 49 C² vs 3 · 9 C² = 27 C² — fewer weights and two more non-linearities.
    """
    if (large - 1) % (small - 1):
        raise ConfigError(f"a {large}x{large} field is not reachable by stacking {small}x{small} convs")
    layers = (large - 1) // (small - 1)
    return {
        "large": conv_params(large, channels, channels, bias=False),
        "stacked": layers * conv_params(small, channels, channels, bias=False),
        "layers": layers,
    }


@dataclass(frozen=True)
class Field:
    """Receptive field of one layer's output along one axis: size r, jump j, and centre of the first unit."""

    size: float = 1
    jump: float = 1
    start: float = 0.5  # centre of pixel 0 in continuous coordinates

    def through(self, kernel: int, stride: int, padding_left: float, dilation: int = 1) -> "Field":
        k = dilation * (kernel - 1) + 1
        return Field(
            self.size + (k - 1) * self.jump, self.jump * stride, self.start + ((k - 1) / 2 - padding_left) * self.jump
        )


def _window(layer, axis: int):
    """(kernel, stride, dilation, padding mode) of a spatial layer along axis 0 (rows) or 1 (columns), or None."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return None  # upsampling: handled separately
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        return layer.kernel_size[axis], layer.strides[axis], layer.dilation_rate[axis], layer.padding
    if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        return layer.pool_size[axis], layer.strides[axis], 1, layer.padding
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return 1, 1, 1, layer.padding[axis][0]
    if hasattr(layer, "kernel_size"):  # custom conv layers (e.g. FixedKernelConv2D): stride 1, 'same'
        return layer.kernel_size[axis], 1, 1, "same"
    return None


def _upsampled(layer, axis: int, field: Field) -> Field:
    """Upsampling by s: the jump shrinks by s; each output sees ceil(k / s) inputs (nearest: 1, bilinear: 2)."""
    if isinstance(layer, keras.layers.Conv2DTranspose):
        kernel, stride = layer.kernel_size[axis], layer.strides[axis]
    else:
        stride = layer.size[axis]
        kernel = stride if layer.interpolation == "nearest" else 2 * stride
    seen = math.ceil(kernel / stride)
    return Field(field.size + (seen - 1) * field.jump, field.jump / stride, field.start)


def _left_padding(size_in: int | None, kernel: int, stride: int, dilation: int, padding) -> float:
    if isinstance(padding, int):
        return padding  # a ZeroPadding2D layer
    if padding == "valid":
        return 0
    k = dilation * (kernel - 1) + 1
    if size_in is None:
        return (k - 1) / 2
    out = math.ceil(size_in / stride)
    total = max((out - 1) * stride + k - size_in, 0)
    return total // 2  # TF 'same' puts the extra pixel on the right


def receptive_fields(model: keras.Model) -> dict[str, tuple[Field, Field]]:
    """(rows, columns) receptive field of every layer's output in a functional model, branches and merges included.

    Layers that change no geometry (activations, batch norm, 1x1-free ops, concatenation) pass the
    field through; global pooling and flatten/dense layers see the whole input (size = input size).
    """
    fields: dict[str, tuple[Field, Field]] = {}
    input_size = model.inputs[0].shape[1:3]
    for layer in model.layers:
        inbound = [node for node in layer._inbound_nodes]
        parents = [t._keras_history.operation.name for node in inbound[:1] for t in node.input_tensors]
        parent_fields = [fields[p] for p in parents if p in fields]
        if not parent_fields:
            fields[layer.name] = (Field(), Field())
            continue
        # merge: the largest field (Distill 2019 §"Arbitrary computation graphs")
        merged = tuple(max((pf[axis] for pf in parent_fields), key=lambda f: f.size) for axis in (0, 1))
        in_shape = layer.input.shape if not isinstance(layer.input, list) else layer.input[0].shape
        out = []
        for axis in (0, 1):
            window = _window(layer, axis)
            if isinstance(
                layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten)
            ):
                size = input_size[axis] or merged[axis].size
                out.append(Field(max(size, merged[axis].size), merged[axis].jump, merged[axis].start))
            elif isinstance(layer, (keras.layers.Conv2DTranspose, keras.layers.UpSampling2D)):
                out.append(_upsampled(layer, axis, merged[axis]))
            elif window is None:
                out.append(merged[axis])
            else:
                kernel, stride, dilation, padding = window
                pad = _left_padding(in_shape[1 + axis], kernel, stride, dilation, padding)
                out.append(merged[axis].through(kernel, stride, pad, dilation))
        fields[layer.name] = tuple(out)
    return fields


def layer_flops(layer) -> int:
    """Multiply-adds x 2 of one forward pass of `layer` for a single image (convolutions and dense layers)."""

    def spatial(shape):
        return math.prod(d for d in shape[1:-1] if d)

    if isinstance(layer, keras.layers.Conv2DTranspose):
        c_in = layer.input.shape[-1]
        return 2 * spatial(layer.input.shape) * math.prod(layer.kernel_size) * c_in * layer.filters
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return 2 * spatial(layer.output.shape) * math.prod(layer.kernel_size) * layer.output.shape[-1]
    if isinstance(layer, keras.layers.Conv2D) or hasattr(layer, "kernel_size") and hasattr(layer, "filters"):
        c_in = layer.input.shape[-1]
        return 2 * spatial(layer.output.shape) * math.prod(layer.kernel_size) * c_in * layer.filters
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(d for d in layer.input.shape[1:] if d) * layer.units
    return 0
