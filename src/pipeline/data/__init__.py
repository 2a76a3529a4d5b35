"""Data: the synthetic shapes generator, the folder loader, augmentation and the Keras input pipeline."""
