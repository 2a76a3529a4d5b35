"""What a trained network learned: `probes` (activation maps, occlusion, saliency, Grad-CAM, activation
maximization, guided backprop; plain functions in keras.ops), `gradients` (the one place that asks the
backend for gradients) and `explain` (the pictures the visualize command logs).

May import data, lecture (the Sobel and Gabor banks filters are shown beside), models, plots, tasks.
"""
