"""Feature visualization with known answers: a fixed vertical-edge (Sobel x) model on a synthetic vertical bar."""

import keras
import numpy as np
import pytest

from pipeline.interpret import probes
from pipeline.lecture.kernels import SOBEL_X
from pipeline.models.layers import FixedKernelConv2D

SIZE, LEFT, RIGHT = 32, 12, 18  # a bright bar over columns 12..17, the full height of the image


def edge_model() -> keras.Model:
    """Fixed Sobel x filters (rising and falling vertical edges, ReLU) -> global average -> a linear head.

    Class 0's score is the mean vertical-edge strength; class 1's is its negative.
    """
    inputs = keras.Input((SIZE, SIZE, 1), name="image")
    conv = keras.layers.Conv2D(2, 3, padding="same", use_bias=False, activation="relu", trainable=False, name="edges")
    x = conv(inputs)
    conv.set_weights([np.stack([SOBEL_X, -SOBEL_X], axis=-1)[:, :, None, :]])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    head = keras.layers.Dense(2, name="head")
    outputs = head(x)
    head.set_weights([np.array([[1.0, -1.0], [1.0, -1.0]]), np.zeros(2)])
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def model():
    return edge_model()


def bar() -> np.ndarray:
    image = np.zeros((1, SIZE, SIZE, 1), np.float32)  # black: zero padding makes no edge at the frame
    image[:, :, LEFT:RIGHT] = 200.0
    return image


def near_edges(columns: np.ndarray, reach: int = 2) -> np.ndarray:
    return (np.abs(columns - LEFT + 0.5) <= reach) | (np.abs(columns - RIGHT + 0.5) <= reach)


def test_saliency_sits_on_the_vertical_edges(model):
    saliency = probes.saliency(model, bar(), probes.target_weights((2,), np.array([0])))[0]
    per_column = saliency.sum(axis=0)
    assert per_column[near_edges(np.arange(SIZE))].sum() / per_column.sum() > 0.95
    assert per_column[LEFT + 2 : RIGHT - 2].sum() == 0  # flat inside the bar: no gradient


def test_grad_cam_on_the_edge_layer_lights_both_edges(model):
    assert probes.last_conv_layer(model) == "edges"
    cam = probes.grad_cam(model, "edges", bar(), probes.target_weights((2,), np.array([0])))[0]
    per_column = cam.sum(axis=0)
    assert per_column[near_edges(np.arange(SIZE))].sum() / per_column.sum() > 0.9
    assert cam[:, LEFT - 1 : LEFT + 1].mean() > 0.5 and cam[:, RIGHT - 1 : RIGHT + 1].mean() > 0.5


def test_occluding_the_bar_costs_more_than_occluding_background(model):
    drop = probes.occlusion(model, bar()[0], probes.target_weights((2,), np.array([0]))[0], patch=6, stride=2)
    assert drop[:, LEFT:RIGHT].mean() > 0 > drop[:, :6].mean()  # grey on black background adds edges


def test_activation_maximization_raises_the_edge_filter_tenfold(model):
    objective = probes.filter_objective(model, "edges", [0, 1])
    images, start, end = probes.maximize(objective, (SIZE, SIZE, 1), 2, steps=32, step_size=8.0, blur_every=8)
    assert np.all(end > 10 * start), (start, end)
    assert images.min() >= 0 and images.max() <= 255  # still a valid image


def test_guided_backprop_projects_the_strongest_unit_onto_its_edge(model):
    channels, projections = probes.guided_backprop(model, "edges", bar()[0], top=2)
    assert sorted(channels) == [0, 1] and projections.shape == (2, SIZE, SIZE, 1)
    for projection in projections:
        columns = np.nonzero(np.abs(projection).sum(axis=(0, 2)))[0]
        assert len(columns) and near_edges(columns).all()


def test_guided_activation_blocks_negative_gradients():
    from pipeline.interpret.gradients import guided, input_gradient

    x = np.array([-1.0, 2.0, 3.0], np.float32)
    _, plain = input_gradient(lambda v: keras.activations.relu(v) * np.array([1.0, 1.0, -1.0]), x)
    _, guided_grad = input_gradient(lambda v: guided(keras.activations.relu)(v) * np.array([1.0, 1.0, -1.0]), x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain), [0.0, 1.0, -1.0])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(guided_grad), [0.0, 1.0, 0.0])


def test_fixed_sobel_stem_is_found_as_a_conv_layer():
    inputs = keras.Input((16, 16, 1))
    x = FixedKernelConv2D("sobel", name="stem")(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    assert [layer.name for layer in probes.conv_layers(model)] == ["stem", "conv"]
    assert probes.last_conv_layer(model) == "conv"
    with probes.logits(model):  # softmax off: the raw scores, which do not sum to one
        logits = keras.ops.convert_to_numpy(model(np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1))))
    assert not np.allclose(logits.sum(axis=1), 1.0)
    assert model.layers[-1].activation is keras.activations.softmax  # restored


def test_a_conv_blocks_unit_is_its_activation_after_batch_norm():
    from pipeline.models.unet import unet

    model = unet((16, 16, 3), 3, depth=1, base_filters=2)
    assert probes.activated(model, "encoder1_conv1") == "encoder1_relu1"
    assert probes.activated(model, "decoder1_upconv") == "decoder1_upconv"  # feeds a concat


def test_a_model_without_spatial_conv_maps_is_refused_by_name():
    from pipeline.errors import ConfigError
    from pipeline.models.classic import mlp

    with pytest.raises(ConfigError, match="model mlp has no conv layer with a spatial output"):
        probes.last_conv_layer(mlp((8, 8, 1), 3))
