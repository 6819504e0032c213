"""Scalar gate activations shared by the CPU and CUDA kernels.

tanh is Eigen's float32 rational approximation (odd degree-13 over even degree-6 polynomial,
clamped to +-7.905): within a few ulp of the true tanh, and branch-free, so loops over gates
vectorise instead of making one libm call per element. sigmoid(v) = 0.5 + 0.5 * tanh(v / 2);
its absolute error is below 2e-7 everywhere (tests/test_kernels.py checks both bounds).
"""

import numpy as np

from .._numba import kernel

_F = np.float32
_CLAMP = _F(7.90531110763549805)
_A1, _A3 = _F(4.89352455891786e-03), _F(6.37261928875436e-04)
_A5, _A7 = _F(1.48572235717979e-05), _F(5.12229709037114e-08)
_A9, _A11, _A13 = _F(-8.60467152213735e-11), _F(2.00018790482477e-13), _F(-2.76076847742355e-16)
_B0, _B2 = _F(4.89352518554385e-03), _F(2.26843463243900e-03)
_B4, _B6 = _F(1.18534705686654e-04), _F(1.19825839466702e-06)
_HALF = _F(0.5)


@kernel
def tanh(v):
    v = min(max(v, -_CLAMP), _CLAMP)
    v2 = v * v
    p = v2 * _A13 + _A11
    p = p * v2 + _A9
    p = p * v2 + _A7
    p = p * v2 + _A5
    p = p * v2 + _A3
    p = p * v2 + _A1
    q = v2 * _B6 + _B4
    q = q * v2 + _B2
    q = q * v2 + _B0
    return (p * v) / q


@kernel
def sigmoid(v):
    return _HALF + _HALF * tanh(_HALF * v)
