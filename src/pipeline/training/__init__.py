"""Training: the runtime (precision, distribution, optimizer), resume and backups, callbacks, the train
stage's job and the transfer stage's phases. `options` names what the config may choose; it imports no
Keras, so a config is checked before TensorFlow loads."""
