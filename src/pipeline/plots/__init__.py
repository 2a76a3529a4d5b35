"""Figures written to files and MLflow (matplotlib, headless): training curves, predictions beside ground
truth, confusion matrices, filter banks, maps. Plain functions of NumPy arrays.

Imports no other folder: every other folder may draw with it.
"""
