"""The lecture's classifiers: each one's defining structure, and that each builds from its config and trains."""

import keras
import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.models.classic import LocalResponseNormalization


def test_lenet5_has_the_papers_layers_and_61706_parameters():
    model = build_model("lenet5", (32, 32, 1), 10)
    shapes = {name: model.get_layer(name).output.shape[1:] for name in ("C1", "S2", "C3", "S4", "C5", "F6")}
    assert shapes == {
        "C1": (28, 28, 6),
        "S2": (14, 14, 6),
        "C3": (10, 10, 16),
        "S4": (5, 5, 16),
        "C5": (1, 1, 120),
        "F6": (84,),
    }
    assert model.count_params() == 61_706  # LeCun et al. 1998 with a fully connected C3, as commonly counted


def test_resnet_blocks_add_a_shortcut_and_layouts_have_their_depth():
    model = build_model("resnet", (32, 32, 3), 10, layout="resnet18", width=8, small_input=True)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 8  # 4 stages x 2 basic blocks, each out = relu(F(x) + x)
    convs = [
        layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and not layer.name.endswith("_proj")
    ]
    assert len(convs) + 1 == 18  # 17 convs + the final dense layer: ResNet-18
    deep = build_model("resnet", (32, 32, 3), 10, layout="resnet50", width=4, small_input=True)
    assert sum(isinstance(layer, keras.layers.Add) for layer in deep.layers) == 16  # 3 + 4 + 6 + 3 bottlenecks
    assert deep.get_layer("stage1_block1_conv3").filters == 16  # bottleneck expands 4x


def test_inception_module_has_four_branches_concatenated():
    model = build_model("googlenet", (32, 32, 3), 10, width=0.125, small_input=True)
    concat = model.get_layer("inception_3a_concat")
    assert len(concat.input) == 4
    # 1x1 | 3x3 | 5x5 | pool-proj channels of module 3a (Szegedy et al. 2015, table 1), scaled by 1/8
    assert [t.shape[-1] for t in concat.input] == [8, 16, 4, 4]
    assert sum(layer.name.endswith("_concat") for layer in model.layers) == 9
    with_aux = build_model("googlenet", (64, 64, 3), 10, width=0.125, aux_heads=True)
    assert len(with_aux.outputs) == 3


def test_convnet_follows_the_typical_pattern_and_vgg11_is_an_instance():
    model = build_model("convnet", (32, 32, 3), 10, n=2, m=3, k=2, filters=8)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [8, 8, 16, 16, 32, 32]
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 3
    assert sum(isinstance(layer, keras.layers.Dense) for layer in model.layers) == 3  # K=2 FC + softmax
    vgg = build_model("convnet", (32, 32, 3), 10, n=[1, 1, 2, 2, 2], m=5, k=2, filters=8)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in vgg.layers) == 8  # VGG-11: 8 convs + 3 FC
    with pytest.raises(ConfigError, match="model.n has 2 entries but model.m=3 stages"):
        build_model("convnet", (32, 32, 3), 10, n=[1, 2], m=3)


def test_alexnet_normalises_locally_like_the_paper():
    x = np.random.default_rng(0).uniform(0, 3, (1, 2, 2, 7)).astype("float32")
    out = keras.ops.convert_to_numpy(LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)(x))
    c = 3  # by hand: channels 1..5 are within radius 2 of channel 3
    expected = x[..., c] / (2.0 + 1e-4 / 5 * np.sum(x[..., 1:6] ** 2, axis=-1)) ** 0.75
    np.testing.assert_allclose(out[..., c], expected, rtol=1e-5)
    model = build_model("alexnet", (32, 32, 3), 10, width=0.125, small_input=True)
    assert [model.get_layer(f"conv{i}").filters for i in range(1, 6)] == [12, 32, 48, 48, 32]


def test_neocognitron_alternates_s_and_c_cells():
    model = build_model("neocognitron", (32, 32, 1), 10, stages=3, filters=4)
    names = [layer.name for layer in model.layers if layer.name[:1] in "SC" and layer.name[1:].isdigit()]
    assert names == ["S1", "C1", "S2", "C2", "S3", "C3"]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lenet5", {}),
        ("mlp", {"hidden": [32]}),
        ("convnet", {"filters": 4}),
        ("alexnet", {"width": 0.0625, "small_input": True}),
        ("resnet", {"width": 4, "small_input": True}),
        ("googlenet", {"width": 0.0625, "small_input": True}),
        ("neocognitron", {"filters": 4}),
    ],
)
def test_every_classifier_trains_one_tiny_epoch(name, options):
    model = build_model(name, (32, 32, 1), 10, **options)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    history = model.fit(rng.uniform(0, 255, (16, 32, 32, 1)), rng.integers(0, 10, 16), batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_box_iou_equals_hand_computed_values():
    from pipeline.models.localization import box_iou

    a = np.array([[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.3, 0.3], [0.0, 0.0, 0.2, 0.2]])
    b = np.array([[0.25, 0.25, 0.75, 0.75], [0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.9, 0.9]])
    # overlap 0.25 x 0.25 = 0.0625 of union 0.25 + 0.25 - 0.0625; identical boxes; disjoint boxes
    expected = [0.0625 / 0.4375, 1.0, 0.0]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(box_iou(a, b)), expected, atol=1e-6)


def test_localizer_puts_a_four_unit_box_head_on_any_backbone():
    for backbone, options in (("lenet5", {}), ("resnet", {"width": 4, "small_input": True})):
        model = build_model("localizer", (32, 32, 1), 3, backbone=backbone, backbone_options=options)
        assert tuple(model.output.shape) == (None, 4) and model.get_layer("box").activation.__name__ == "sigmoid"
