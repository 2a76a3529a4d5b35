"""Data: sources by `data.layout` (generated sets, the user's folders, bundled and downloaded sets), file
readers at their true bit depth (`pixels`, `folders`), the split index and the input pipeline (`samples`,
`sequence`), augmentation (`augment`), the data profile (`profile`).

May import config (its vocabularies), plots (the profile's figure) and tasks (targets: what a mask, a label
or a box needs); no Keras at import time except `sequence` (a keras.utils.PyDataset).
"""
