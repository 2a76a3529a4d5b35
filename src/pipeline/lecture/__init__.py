"""The lecture's own algorithms, written from scratch as readable references: `kernels` (filters and
convolution in NumPy), `arithmetic` (output sizes, parameters, receptive fields, FLOPs), `biology` (simple and
complex cells), `analysis` (a model's conv arithmetic as a table, report and figures).

May import data (the shapes images the analysis filters) and plots; nothing with Keras at import time
except `analysis`.
"""
