"""The lecture's filters and its convolution, written from scratch in NumPy as the readable reference.

Kernels are arrays indexed [row, column] = [y, x], with y growing downwards as in images.
Banks are (F, F, C_in, K) — the layout of Keras Conv2D weights — so they drop straight into a layer.
"""

import math

import numpy as np

from pipeline.errors import ConfigError

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)  # responds to vertical edges
SOBEL_Y = SOBEL_X.T.copy()  # [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]: responds to horizontal edges


def gabor(
    size: int, wavelength: float, theta: float, phase: float = 0.0, sigma: float | None = None, gamma: float = 0.5
) -> np.ndarray:
    """Complex Gabor kernel g(x, y; λ, θ, φ, σ, γ) = exp(-(x'² + γ² y'²) / 2σ²) · exp(i(2π x'/λ + φ)).

    With x' = x cosθ + y sinθ and y' = -x sinθ + y cosθ (the lecture's formula after Goodfellow et al.
    2016; the slide's envelope writes y where y' is meant). Real part: even (cosine) filter; imaginary
    part: odd (sine) filter. sigma defaults to 0.56 λ (a one-octave bandwidth).
    """
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"gabor size={size} is invalid: must be a positive odd integer")
    if wavelength <= 0:
        raise ConfigError(f"gabor wavelength={wavelength} is invalid: must be > 0")
    sigma = 0.56 * wavelength if sigma is None else sigma
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    x_rot = x * math.cos(theta) + y * math.sin(theta)
    y_rot = -x * math.sin(theta) + y * math.cos(theta)
    envelope = np.exp(-(x_rot**2 + gamma**2 * y_rot**2) / (2 * sigma**2))
    return envelope * np.exp(1j * (2 * math.pi * x_rot / wavelength + phase))


def gabor_bank(
    size: int = 7, orientations: int = 4, wavelengths: tuple[float, ...] = (3.0, 6.0), gamma: float = 0.5
) -> np.ndarray:
    """Real (even) Gabor filters over `orientations` angles in [0, π) × `wavelengths`: (size, size, 1, K), zero mean."""
    kernels = []
    for wavelength in wavelengths:
        for k in range(orientations):
            g = gabor(size, wavelength, math.pi * k / orientations, gamma=gamma).real
            kernels.append(g - g.mean())  # zero mean: no response to flat regions, like Sobel
    return np.stack(kernels, axis=-1)[:, :, None, :].astype(np.float32)


def sobel_bank() -> np.ndarray:
    """Sobel x and y as a (3, 3, 1, 2) bank."""
    return np.stack([SOBEL_X, SOBEL_Y], axis=-1)[:, :, None, :]


def _gaussian(size: int, sigma: float) -> np.ndarray:
    """A sampled 2-D Gaussian over a size x size window, normalised to sum 1 over the window."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    g = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.sum()


def difference_of_gaussians(
    size: int = 9, sigma_center: float = 1.0, sigma_surround: float = 2.0, balance: float = 1.0, on: bool = True
) -> np.ndarray:
    """A centre-surround receptive field (retina, lateral geniculate nucleus): the difference of a narrow and a
    wide Gaussian, DoG = G(σ_centre) − balance · G(σ_surround), each normalised to unit sum over the window.

    ON-centre cells are excited by light in the centre and inhibited by light in the surround; OFF-centre
    cells (on=False) the reverse. With balance=1 the centre and surround cancel: no response to a uniform
    field, only to spots and edges (Rodieck 1965; Marr & Hildreth 1980 use σ_surround = 1.6 σ_centre).
    """
    if size < 1 or size % 2 == 0:
        raise ConfigError(f"size={size} is invalid: must be a positive odd integer")
    if not sigma_center > 0:
        raise ConfigError(f"sigma_center={sigma_center} is invalid: must be > 0")
    if not sigma_surround > sigma_center:
        raise ConfigError(
            f"sigma_surround={sigma_surround} is invalid: must be > sigma_center={sigma_center} "
            "(the surround is wider than the centre)"
        )
    if not 0 <= balance <= 1:
        raise ConfigError(f"balance={balance} is invalid: must be in [0, 1] (1: no response to a uniform field)")
    kernel = _gaussian(size, sigma_center) - balance * _gaussian(size, sigma_surround)
    return (kernel if on else -kernel).astype(np.float32)


def dog_bank(
    size: int = 9, scales: tuple[tuple[float, float], ...] = ((1.0, 2.0), (2.0, 4.0)), balance: float = 1.0
) -> np.ndarray:
    """ON- and OFF-centre DoG filters at each (σ_centre, σ_surround) scale: (size, size, 1, 2 · scales)."""
    kernels = []
    for sigma_center, sigma_surround in scales:
        on = difference_of_gaussians(size, sigma_center, sigma_surround, balance, on=True)
        kernels += [on, -on]
    return np.stack(kernels, axis=-1)[:, :, None, :].astype(np.float32)


BANKS = {"sobel": sobel_bank, "gabor": gabor_bank, "dog": dog_bank}


def kernel_bank(name: str, **options) -> np.ndarray:
    """A named bank: 'sobel', 'gabor' or 'dog' (with gabor_bank's or dog_bank's options)."""
    if name not in BANKS:
        raise ConfigError(f"kernel bank {name!r} is unknown; valid: {', '.join(BANKS)}")
    return BANKS[name](**options)


def template(pattern: np.ndarray) -> np.ndarray:
    """A filter that *is* the pattern it looks for, made zero-mean and unit-norm.

    Cross-correlating an image with it peaks where the image most resembles the pattern (the
    lecture's "filter as a template": the response is the dot product of weights and patch).
    """
    t = np.asarray(pattern, dtype=np.float64)
    t = t - t.mean()
    norm = np.linalg.norm(t)
    if norm == 0:
        raise ConfigError("template pattern is constant: a flat pattern matches everything equally")
    return t / norm


def conv2d(
    x: np.ndarray,
    kernels: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int = 1,
    padding: int = 0,
    flip: bool = False,
) -> np.ndarray:
    """The conv layer from the slides: K filters of F×F×C slide over a zero-padded input with stride S.

    x: (H, W, C); kernels: (F, F, C, K); output: (H2, W2, K) with H2 = (H - F + 2P) / S + 1.
    flip=False is cross-correlation, what deep-learning "convolution" layers compute:
        out[i, j, k] = Σ_u Σ_v Σ_c x[iS + u, jS + v, c] · w[u, v, c, k]
    flip=True is true convolution, the lecture's (f * g)[x, y] = Σ Σ f[n1, n2] g[x - n1, y - n2],
    i.e. correlation with the kernel rotated by 180°.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(kernels, dtype=np.float64)
    if x.ndim != 3 or w.ndim != 4 or w.shape[2] != x.shape[2]:
        raise ConfigError(f"conv2d needs x (H, W, C) and kernels (F, F, C, K); got {x.shape} and {w.shape}")
    if flip:
        w = w[::-1, ::-1]
    f_h, f_w = w.shape[:2]
    padded = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    out_h = (padded.shape[0] - f_h) // stride + 1
    out_w = (padded.shape[1] - f_w) // stride + 1
    out = np.zeros((out_h, out_w, w.shape[3]))
    for i in range(out_h):
        for j in range(out_w):
            patch = padded[i * stride : i * stride + f_h, j * stride : j * stride + f_w, :]
            out[i, j] = np.tensordot(patch, w, axes=([0, 1, 2], [0, 1, 2]))  # dot product with every filter
    return out + (0.0 if bias is None else np.asarray(bias))


def correlate2d(image: np.ndarray, kernel: np.ndarray, padding: int = 0, stride: int = 1) -> np.ndarray:
    """Single-channel cross-correlation of a 2-D image with a 2-D kernel."""
    return conv2d(np.asarray(image)[..., None], np.asarray(kernel)[..., None, None], stride=stride, padding=padding)[
        ..., 0
    ]


def convolve2d(image: np.ndarray, kernel: np.ndarray, padding: int = 0, stride: int = 1) -> np.ndarray:
    """Single-channel true convolution (kernel flipped) of a 2-D image with a 2-D kernel."""
    return conv2d(
        np.asarray(image)[..., None], np.asarray(kernel)[..., None, None], stride=stride, padding=padding, flip=True
    )[..., 0]
