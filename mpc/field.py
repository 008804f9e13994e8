"""Prime-field arithmetic over GF(p), p = 2^31 - 1, vectorised with numpy.

Why the Mersenne prime 2^31 - 1:

* an element fits in ``uint32``, so a field vector costs exactly as many bytes on the wire as a
  float32 update (the secagg bandwidth target is ~1x, not 2x as with a 61-bit prime);
* the sum of two reduced elements is below 2^32, so modular addition and subtraction run in
  ``uint32`` with wrap-around and one ``minimum`` (no branch, no 64-bit temporaries);
* the product of two reduced elements is below 2^62, so multiplication is exact in ``uint64``
  and reduces with the Mersenne fold ``x = (x & p) + (x >> 31)`` (no division, no 128-bit);
* uniform sampling is exact: keep the low 31 bits of a CSPRNG word and redraw the single
  out-of-range value ``2^31 - 1`` (probability 2^-31 per element), so masks and polynomial
  coefficients are perfectly uniform, which the privacy proofs of Shamir (1979) and
  Bonawitz et al. (CCS 2017) need.

Scalar helpers (inverse, Lagrange coefficients) use Python integers; they only ever touch
O(m^2) numbers for a cluster of m members.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

PRIME: int = 2**31 - 1
"""The field modulus p = 2^31 - 1 (a Mersenne prime)."""

FIELD_DTYPE = np.uint32
"""Storage dtype of reduced field elements; serialised little-endian, 4 bytes per element."""

FieldVector = npt.NDArray[np.uint32]

_P32 = np.uint32(PRIME)
_P64 = np.uint64(PRIME)
_SHIFT31 = np.uint64(31)


def as_field_vector(values: npt.ArrayLike, name: str = "values") -> FieldVector:
    """Validate ``values`` as a 1-D vector of reduced field elements and return it as uint32."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D field vector, got shape {array.shape}")
    if array.dtype != FIELD_DTYPE:
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integers in [0, {PRIME}), got {array.dtype}")
        if array.size and (int(array.min()) < 0 or int(array.max()) >= PRIME):
            raise ValueError(f"{name} must hold integers in [0, {PRIME})")
        array = array.astype(FIELD_DTYPE)
    return array


def add(a: FieldVector, b: FieldVector) -> FieldVector:
    """(a + b) mod p for reduced uint32 vectors: a + b < 2^32, then min(s, s - p) with wrap."""
    total = a + b
    return np.minimum(total, total - _P32)


def add_into(accumulator: FieldVector, b: FieldVector) -> None:
    """In-place ``accumulator = (accumulator + b) mod p`` (saves one allocation per term)."""
    np.add(accumulator, b, out=accumulator)
    np.minimum(accumulator, accumulator - _P32, out=accumulator)


def sub(a: FieldVector, b: FieldVector) -> FieldVector:
    """(a - b) mod p: the uint32 difference wraps when a < b, and min(d, d + p) fixes it."""
    difference = a - b
    return np.minimum(difference, difference + _P32)


def sub_into(accumulator: FieldVector, b: FieldVector) -> None:
    """In-place ``accumulator = (accumulator - b) mod p``."""
    np.subtract(accumulator, b, out=accumulator)
    np.minimum(accumulator, accumulator + _P32, out=accumulator)


def reduce_u64(values: npt.NDArray[np.uint64], bound: int = 2**64 - 1) -> FieldVector:
    """Reduce uint64 values, all <= ``bound``, to uint32 field elements.

    Mersenne folds x -> (x & p) + (x >> 31) (x = (x >> 31) 2^31 + (x & p) and 2^31 = 1 mod p)
    until the values are below 2p < 2^32, then one wrap-around ``minimum`` subtracts p.
    A tight ``bound`` skips folds; ``values`` may be overwritten.
    """
    while bound >= 2 * PRIME:
        high = values >> _SHIFT31
        np.bitwise_and(values, _P64, out=values)
        values += high
        bound = PRIME + (bound >> 31)
    result = values.astype(np.uint32)
    if bound >= PRIME:
        np.minimum(result, result - _P32, out=result)
    return result


def scale(a: FieldVector, scalar: int) -> FieldVector:
    """(scalar * a) mod p for a Python-int scalar (reduced first), exact via uint64 products."""
    factor = scalar % PRIME
    return reduce_u64(a.astype(np.uint64) * np.uint64(factor), (PRIME - 1) * factor)


def linear_combination(coefficients: Sequence[int], vectors: Sequence[FieldVector]) -> FieldVector:
    """sum_k c_k * v_k mod p, accumulated lazily in uint64.

    Each product is < p * c_k; the accumulator is folded only when the next product could wrap
    2^64, so small coefficients (Vandermonde rows x^k of small points) need no fold at all.
    """
    if len(coefficients) != len(vectors) or not vectors:
        raise ValueError(
            f"coefficients and vectors must be non-empty and equally long, got "
            f"{len(coefficients)} and {len(vectors)}"
        )
    accumulator = np.zeros(vectors[0].shape, dtype=np.uint64)
    product = np.empty(vectors[0].shape, dtype=np.uint64)
    bound = 0
    for coefficient, vector in zip(coefficients, vectors, strict=True):
        reduced = coefficient % PRIME
        if reduced == 0:
            continue
        term_bound = (PRIME - 1) * reduced
        if bound + term_bound >= 2**64:
            high = accumulator >> _SHIFT31
            np.bitwise_and(accumulator, _P64, out=accumulator)
            accumulator += high
            bound = PRIME + (bound >> 31)
        if reduced == 1:
            accumulator += vector
        else:
            np.multiply(vector, np.uint64(reduced), out=product, dtype=np.uint64, casting="unsafe")
            accumulator += product
        bound += term_bound
    return reduce_u64(accumulator, bound)


def inverse(value: int) -> int:
    """Multiplicative inverse in GF(p) by Fermat's little theorem: a^(p-2) mod p."""
    if value % PRIME == 0:
        raise ZeroDivisionError("0 has no inverse in GF(p)")
    return pow(value, PRIME - 2, PRIME)


def lagrange_coefficients(points: Sequence[int], at: int = 0) -> list[int]:
    """Lagrange basis values l_j(at) = prod_{k != j} (at - x_k) / (x_j - x_k) mod p.

    The interpolating polynomial through (x_j, y_j) evaluated at ``at`` is sum_j l_j(at) y_j
    (Shamir 1979, reconstruction at 0).
    """
    if len(set(points)) != len(points):
        raise ValueError(f"interpolation points must be distinct, got {list(points)}")
    coefficients = []
    for j, x_j in enumerate(points):
        numerator, denominator = 1, 1
        for k, x_k in enumerate(points):
            if k != j:
                numerator = numerator * (at - x_k) % PRIME
                denominator = denominator * (x_j - x_k) % PRIME
        coefficients.append(numerator * inverse(denominator) % PRIME)
    return coefficients


def uniform_from_bytes(stream: Callable[[int], bytes], count: int) -> FieldVector:
    """Exactly uniform field elements from a byte stream (a CSPRNG or a PRG keystream).

    Each element takes the low 31 bits of a little-endian uint32 word; the only value outside
    the field (2^31 - 1) is redrawn from further stream bytes, so the output is uniform on
    GF(p) with no modular bias. ``stream(n)`` must return the next n bytes of the stream.
    """
    words = np.bitwise_and(np.frombuffer(stream(4 * count), dtype="<u4"), _P32, dtype=np.uint32)
    # after masking every word is <= p, so one max() pass tells whether any word needs a redraw
    if count == 0 or int(words.max()) < PRIME:
        return words
    rejected = np.flatnonzero(words == _P32)
    while rejected.size:
        redraw = np.frombuffer(stream(4 * rejected.size), dtype="<u4") & _P32
        words[rejected] = redraw
        rejected = rejected[redraw == _P32]
    return words


def to_bytes(vector: FieldVector) -> bytes:
    """Serialise a field vector as little-endian uint32 (4 bytes per element)."""
    return np.ascontiguousarray(vector, dtype="<u4").tobytes()


def from_bytes(
    data: bytes, expected_length: int | None = None, name: str = "vector"
) -> FieldVector:
    """Parse a little-endian uint32 field vector, rejecting bad lengths and out-of-field values."""
    if len(data) % 4:
        raise ValueError(f"{name} byte length {len(data)} is not a multiple of 4")
    vector = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    if expected_length is not None and vector.size != expected_length:
        raise ValueError(f"{name} has {vector.size} elements, expected {expected_length}")
    if vector.size and int(vector.max()) >= PRIME:
        raise ValueError(f"{name} holds a value outside the field [0, {PRIME})")
    return vector
