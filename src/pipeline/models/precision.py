"""A model computing in float32 with the same weights: what export formats take (ONNX Runtime refuses the Mul
of a bfloat16 and a float16 that a mixed_bfloat16 graph converts to, LiteRT has no bfloat16 ops) and what
gradients with respect to the input need (saliency, Grad-CAM, activation maximization). A model trained in
mixed precision (trainer.precision=auto on a bfloat16 CPU) keeps its variables in float32 already, so only
the compute dtype changes."""

import keras


def _as_float32(node):
    """A model config with every layer's dtype policy (mixed_bfloat16, mixed_float16) set to float32."""
    if isinstance(node, dict):
        if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: _as_float32(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_as_float32(value) for value in node]
    return node


def is_float32(model: keras.Model) -> bool:
    return all(layer.dtype_policy.name == "float32" for layer in model.layers)


def float32_model(model: keras.Model) -> keras.Model:
    """The same model computing in float32, with the same weights (the model itself when it already does)."""
    if is_float32(model):
        return model
    clone = model.__class__.from_config(_as_float32(model.get_config()))
    clone.set_weights(model.get_weights())
    return clone
