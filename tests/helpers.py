"""Small builders shared by the app tests (imported as ``helpers``; pytest puts tests/ on sys.path)."""


def build_tiny_model(name: str = "tiny_test_cnn"):
    """Input (224, 224, 3) -> two small Conv2D -> global average pooling -> Dense(1, sigmoid)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((224, 224, 3), name="image")
    x = keras.layers.Conv2D(4, 5, strides=4, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="output")(x)
    return keras.Model(inputs, outputs, name=name)
