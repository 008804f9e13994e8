"""Vectorised Shamir secret sharing over GF(2^31 - 1) with Reed-Solomon robust reconstruction.

Sharing (Shamir, "How to share a secret", CACM 1979): a secret vector s in GF(p)^d is hidden in
d independent random polynomials f_c(x) = s_c + a_{1,c} x + ... + a_{t-1,c} x^{t-1}; holder j gets
f(j) for j = 1..m. Any t shares determine s by Lagrange interpolation at 0; any t - 1 shares are
uniformly distributed whatever s is (perfect privacy against t - 1 colluders). Shares are
linear, so a holder's sum of the shares it holds is a share of the sum (the "partial sum").

Robust reconstruction: the received partial sums are a Reed-Solomon codeword of dimension t and
length n (received), minimum distance n - t + 1, so up to floor((n - t) / 2) wrong values can be
corrected (Berlekamp & Welch, US patent 4,633,470, 1986; Gao, "A new algorithm for decoding
Reed-Solomon codes", 2003, is an equivalent alternative). Decoding a length-d vector is done by
(1) interpolating from t trusted points and checking every other point on every coordinate,
(2) on an inconsistent coordinate, running scalar Berlekamp-Welch to locate the lying holders,
(3) excluding them and re-checking all coordinates. A result is returned only when all
non-excluded shares agree on every coordinate; with at most e_max liars such agreement implies
the true polynomial (it shares >= n - 2 e_max >= t points with it), otherwise the result is
marked failed.

Guarantee: with ``max_errors = e`` and e_c actual liars, the output is exact when e_c <= e, and
is "failed" (never wrong) when e_c <= n - t - e. Between those (only possible when e > 0 and
liars collude), no decoder can tell the truth apart, as in any bounded-distance RS decoder.
With n = t nothing can be checked, which :attr:`ReconstructionResult.redundancy` reports.

Packed sharing (Franklin & Yung, "Communication complexity of secure computation", STOC 1992;
:func:`share_packed`): l secrets sit at the points 0, -1, ..., -(l-1) of one polynomial of degree
t + l - 2, so each share carries l coordinates. Any t - 1 shares stay uniform; reconstruction
and the decoder above work unchanged with t replaced by the code dimension t + l - 1, and the
secrets are read at the l secret points instead of at 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from phalanx.mpc import field as gf
from phalanx.mpc.crypto import Csprng
from phalanx.mpc.field import PRIME, FieldVector

MAX_SHARES = 2**16
"""Share points are 1..m with m < 2^16, which keeps Horner steps exact in uint64."""

_P64 = np.uint64(PRIME)
_SHIFT31 = np.uint64(31)


def _check_threshold(threshold: int, num_shares: int) -> None:
    if not 1 <= num_shares < MAX_SHARES:
        raise ValueError(f"num_shares must be in [1, {MAX_SHARES}), got {num_shares}")
    if not 1 <= threshold <= num_shares:
        raise ValueError(f"threshold must be in [1, num_shares={num_shares}], got {threshold}")


def share_vector(
    secret: FieldVector, threshold: int, num_shares: int, rng: Csprng
) -> list[FieldVector]:
    """Split ``secret`` (d,) into ``num_shares`` shares; share j-1 is f(j), j = 1..m.

    One random degree-(t-1) polynomial per coordinate; share j is the Vandermonde row
    (1, j, ..., j^(t-1)) times the coefficient matrix, accumulated lazily in uint64 (small j^k
    need no intermediate reduction, see :func:`mpc.field.linear_combination`).
    """
    _check_threshold(threshold, num_shares)
    secret = gf.as_field_vector(secret, "secret")
    length = secret.size
    if threshold == 1:
        return [secret.copy() for _ in range(num_shares)]
    coefficients = rng.field_elements((threshold - 1) * length).reshape(threshold - 1, length)
    return evaluate_at_points([secret, *coefficients], num_shares)


def secret_points(packing: int) -> tuple[int, ...]:
    """Where a packed polynomial holds its secrets: 0, -1, ..., -(packing - 1) mod p.

    Holders sit at 1..m, so the two sets never meet, and together with the random values at
    1..t-1 they form one run of consecutive integers (see :func:`share_packed`).
    """
    if packing < 1:
        raise ValueError(f"packing must be >= 1, got {packing}")
    return tuple((-index) % PRIME for index in range(packing))


def packed_length(dimension: int, packing: int) -> int:
    """Length of each share when ``dimension`` secrets are packed ``packing`` per polynomial."""
    if packing < 1:
        raise ValueError(f"packing must be >= 1, got {packing}")
    return -(-dimension // packing)


def share_packed(
    secret: FieldVector, threshold: int, num_shares: int, packing: int, rng: Csprng
) -> list[FieldVector]:
    """Packed Shamir sharing (Franklin & Yung, STOC 1992): ``packing`` secrets per polynomial.

    The secret (d,) is zero-padded to l * L (L = ceil(d / l)) and cut into l blocks; block i is
    the value of the sharing polynomials at x = -i. Holders 1..t-1 get fresh uniform vectors
    f(1..t-1), which fixes f of degree t + l - 2 through the l + t - 1 consecutive points
    -(l-1)..t-1; shares f(t..m) follow by Newton forward differences (d modular additions of
    length L per point, no multiplication). Each share has length L, so bytes drop by l.

    Privacy: any t - 1 shares are uniform whatever the secrets (the polynomials that vanish on
    the l secret points are Z(x) g(x) with deg g <= t - 2, and g is fixed by t - 1 values).
    Reconstruction needs t + l - 1 shares, so at the same cluster size l - 1 fewer holders may
    be missing, and the Reed-Solomon code corrects floor((n - t - l + 1) / 2) wrong ones.
    """
    _check_threshold(threshold, num_shares)
    if packing == 1:
        return share_vector(secret, threshold, num_shares, rng)
    reconstruction = threshold + packing - 1
    if packing < 1 or reconstruction > num_shares:
        raise ValueError(
            f"packing {packing} with threshold {threshold} needs t + l - 1 = {reconstruction} "
            f"shares to reconstruct, more than the {num_shares} holders"
        )
    secret = gf.as_field_vector(secret, "secret")
    length = packed_length(secret.size, packing)
    padded = np.zeros(packing * length, dtype=np.uint32)
    padded[: secret.size] = secret
    blocks = padded.reshape(packing, length)
    randoms = rng.field_elements((threshold - 1) * length).reshape(threshold - 1, length)
    # f at the consecutive points -(l-1), ..., -1, 0, 1, ..., t-1
    known = [blocks[index] for index in reversed(range(packing))] + list(randoms)
    return _extend_by_differences(known, 1 - packing, num_shares)


SHARE_BLOCK = 1 << 15
"""Coordinates per block of :func:`_extend_by_differences`: a block's difference table (one
row per degree) stays in the CPU cache while every point is computed."""


def _extend_by_differences(
    known: Sequence[FieldVector], first_point: int, last_point: int, emit_from: int = 1
) -> list[FieldVector]:
    """f(emit_from), ..., f(last_point) for deg f < len(known), given f at the consecutive
    points first_point, first_point + 1, ...: Newton's forward-difference table at
    ``first_point`` (state[k] = Delta^k f), advanced by Delta^k f(x+1) = Delta^k f(x) +
    Delta^(k+1) f(x), i.e. deg f modular additions per point, in blocks of `SHARE_BLOCK`
    coordinates."""
    length = known[0].size
    emitted = max(0, last_point - max(first_point, emit_from) + 1)
    values = np.empty((emitted, length), dtype=np.uint32)
    for start in range(0, length, SHARE_BLOCK):
        stop = min(length, start + SHARE_BLOCK)
        row = [vector[start:stop] for vector in known]
        state = [row[0].copy()]
        for _ in range(1, len(known)):
            row = [gf.sub(row[i + 1], row[i]) for i in range(len(row) - 1)]
            state.append(row[0])
        index = 0
        for point in range(first_point, last_point + 1):
            if point >= emit_from:
                values[index, start:stop] = state[0]
                index += 1
            if point < last_point:
                for k in range(len(state) - 1):
                    gf.add_into(state[k], state[k + 1])
    return list(values)


def unpack(blocks: FieldVector, dimension: int) -> FieldVector:
    """The packed secrets in their original order: blocks at 0, -1, ... concatenated, unpadded."""
    return blocks[:dimension]


def evaluate_at_points(terms: Sequence[FieldVector], num_points: int) -> list[FieldVector]:
    """f(1), ..., f(m) for f(x) = sum_k terms[k] x^k, coordinate-wise.

    The first t = len(terms) points are Vandermonde rows times the coefficients; the others
    follow by Newton's forward differences (Delta^t f = 0 for degree t - 1): f(j+1) = f(j) +
    Delta f(j), Delta^k f(j+1) = Delta^k f(j) + Delta^(k+1) f(j), i.e. t - 1 modular additions
    per point instead of a t-term multiply-and-reduce.
    """
    degree_plus_one = len(terms)
    first = min(degree_plus_one, num_points)
    values = [
        gf.linear_combination([pow(point, k, PRIME) for k in range(degree_plus_one)], terms)
        for point in range(1, first + 1)
    ]
    if num_points <= degree_plus_one:
        return values
    return values + _extend_by_differences(values, 1, num_points, emit_from=degree_plus_one + 1)


def partial_sum(shares: Sequence[FieldVector]) -> FieldVector:
    """A holder's share of the sum: the field sum of the shares it holds (linearity)."""
    if not shares:
        raise ValueError("partial_sum needs at least one share")
    length = shares[0].size
    accumulator = np.zeros(length, dtype=np.uint64)
    for index, share in enumerate(shares):
        if share.shape != (length,):
            raise ValueError(f"share {index} has shape {share.shape}, expected ({length},)")
        accumulator += share
    return gf.reduce_u64(accumulator, len(shares) * (PRIME - 1))


def interpolate_at(shares: Mapping[int, FieldVector], at: int) -> FieldVector:
    """Evaluate at ``at`` the polynomial through all given (point, share) pairs (Lagrange)."""
    points = sorted(shares)
    return gf.linear_combination(gf.lagrange_coefficients(points, at), [shares[x] for x in points])


def reconstruct(shares: Mapping[int, FieldVector], threshold: int) -> FieldVector:
    """Plain Lagrange reconstruction f(0) from the ``threshold`` smallest share points."""
    if len(shares) < threshold:
        raise ValueError(f"need at least threshold={threshold} shares, got {len(shares)}")
    points = sorted(shares)[:threshold]
    return interpolate_at({x: shares[x] for x in points}, 0)


def _poly_divide(numerator: list[int], denominator: list[int]) -> tuple[list[int], list[int]]:
    """Polynomial long division mod p; coefficient lists are lowest degree first."""
    remainder = list(numerator)
    quotient = [0] * max(1, len(numerator) - len(denominator) + 1)
    lead_inverse = gf.inverse(denominator[-1])
    for shift in range(len(numerator) - len(denominator), -1, -1):
        factor = remainder[shift + len(denominator) - 1] * lead_inverse % PRIME
        quotient[shift] = factor
        for k, coefficient in enumerate(denominator):
            remainder[shift + k] = (remainder[shift + k] - factor * coefficient) % PRIME
    return quotient, remainder[: len(denominator) - 1]


def _solve_mod_p(matrix: list[list[int]], rhs: list[int], unknowns: int) -> list[int] | None:
    """Any solution of matrix @ u = rhs over GF(p) (free variables set to 0), or None."""
    rows = [[*row[:], b] for row, b in zip(matrix, rhs, strict=True)]
    pivot_columns = []
    rank = 0
    for column in range(unknowns):
        pivot = next((r for r in range(rank, len(rows)) if rows[r][column]), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        scale = gf.inverse(rows[rank][column])
        rows[rank] = [value * scale % PRIME for value in rows[rank]]
        for r in range(len(rows)):
            if r != rank and rows[r][column]:
                factor = rows[r][column]
                rows[r] = [
                    (a - factor * b) % PRIME for a, b in zip(rows[r], rows[rank], strict=True)
                ]
        pivot_columns.append(column)
        rank += 1
    if any(row[-1] for row in rows[rank:]):
        return None
    solution = [0] * unknowns
    for r, column in enumerate(pivot_columns):
        solution[column] = rows[r][-1]
    return solution


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    result = 0
    for coefficient in reversed(coefficients):
        result = (result * x + coefficient) % PRIME
    return result


def berlekamp_welch(
    points: Sequence[int], values: Sequence[int], threshold: int, max_errors: int
) -> tuple[list[int], list[int]] | None:
    """Scalar Berlekamp-Welch: find P (deg < t) agreeing with all but <= e of (x_i, y_i).

    Solves Q(x_i) = y_i E(x_i) for monic E of degree e and deg Q < t + e (n equations, t + 2e
    unknowns), then P = Q / E. Returns (coefficients of P, indices of disagreeing points) or None
    when no such P exists within ``max_errors`` errors.
    """
    n, e = len(points), max_errors
    if n < threshold + 2 * e:
        raise ValueError(f"Berlekamp-Welch needs n >= t + 2e, got n={n}, t={threshold}, e={e}")
    unknowns = threshold + 2 * e
    matrix, rhs = [], []
    for x, y in zip(points, values, strict=True):
        powers = [pow(x, k, PRIME) for k in range(threshold + e)]
        row = powers[: threshold + e] + [(-y * powers[k]) % PRIME for k in range(e)]
        matrix.append(row)
        rhs.append(y * pow(x, e, PRIME) % PRIME)
    solution = _solve_mod_p(matrix, rhs, unknowns)
    if solution is None:
        return None
    q_poly = solution[: threshold + e]
    e_poly = [*solution[threshold + e :], 1]
    quotient, remainder = _poly_divide(q_poly, e_poly)
    if any(remainder) or any(quotient[threshold:]):
        return None
    polynomial = (quotient + [0] * threshold)[:threshold]
    errors = [
        i
        for i, (x, y) in enumerate(zip(points, values, strict=True))
        if _evaluate(polynomial, x) != y
    ]
    if len(errors) > e:
        return None
    return polynomial, errors


@dataclass(frozen=True)
class ReconstructionResult:
    """Outcome of robust reconstruction.

    Attributes:
        value: f(0) on every coordinate, or None when ``failed``.
        failed: True when the shares could not be decoded within the error bound.
        reason: why it failed (empty on success).
        suspects: share points excluded as wrong (lying or corrupted holders).
        used_points: share points the value was interpolated and verified from.
        redundancy: received - threshold; 0 means no check was possible.
    """

    value: FieldVector | None
    failed: bool
    reason: str = ""
    suspects: tuple[int, ...] = ()
    used_points: tuple[int, ...] = ()
    redundancy: int = 0
    max_errors: int = 0
    decoder_calls: int = field(default=0, compare=False)


def _inconsistent_coordinates(
    shares: Mapping[int, FieldVector], points: Sequence[int], threshold: int
) -> np.ndarray:
    """Boolean mask of coordinates where shares at ``points`` do not lie on one deg<t polynomial."""
    base = list(points[:threshold])
    base_vectors = [shares[x] for x in base]
    inconsistent = np.zeros(base_vectors[0].size, dtype=bool)
    for x in points[threshold:]:
        predicted = gf.linear_combination(gf.lagrange_coefficients(base, x), base_vectors)
        inconsistent |= predicted != shares[x]
    return inconsistent


def reconstruct_robust(
    shares: Mapping[int, FieldVector],
    threshold: int,
    max_errors: int | None = None,
    locator_samples: int = 3,
    at: Sequence[int] = (0,),
) -> ReconstructionResult:
    """Reconstruct f(0) from received shares, correcting up to ``max_errors`` wrong ones.

    ``max_errors`` defaults to floor((n - t) / 2), the Reed-Solomon unique-decoding radius; a
    smaller value trades correction for guaranteed detection (see module docstring). For packed
    shares, ``threshold`` is the code dimension t + l - 1 and ``at`` the secret points
    (:func:`secret_points`); the value is f at each of them, concatenated.
    """
    if not at:
        raise ValueError("at must name at least one evaluation point")
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    points = sorted(shares)
    received = len(points)
    if received < threshold:
        return ReconstructionResult(
            None, True, f"only {received} shares received, threshold is {threshold}"
        )
    if any(x < 1 or x >= PRIME for x in points):
        raise ValueError(f"share points must be in [1, {PRIME}), got {points}")
    length = shares[points[0]].size
    for x in points:
        if shares[x].shape != (length,):
            raise ValueError(
                f"share at point {x} has shape {shares[x].shape}, expected ({length},)"
            )
    radius = (received - threshold) // 2
    limit = radius if max_errors is None else min(max_errors, radius)
    if limit < 0:
        raise ValueError(f"max_errors must be >= 0, got {max_errors}")
    excluded: set[int] = set()
    decoder_calls = 0
    while True:
        trusted = [x for x in points if x not in excluded]
        inconsistent = _inconsistent_coordinates(shares, trusted, threshold)
        bad = np.flatnonzero(inconsistent)
        if bad.size == 0:
            basis = {x: shares[x] for x in trusted[:threshold]}
            value = np.concatenate([interpolate_at(basis, point) for point in at])
            return ReconstructionResult(
                value,
                False,
                "",
                tuple(sorted(excluded)),
                tuple(trusted),
                received - threshold,
                limit,
                decoder_calls,
            )
        if limit == 0 or len(excluded) >= limit:
            return ReconstructionResult(
                None,
                True,
                f"shares disagree on {bad.size} coordinates beyond the correction bound "
                f"max_errors={limit} (received={received}, threshold={threshold})",
                tuple(sorted(excluded)),
                (),
                received - threshold,
                limit,
                decoder_calls,
            )
        sample = bad[
            np.unique(np.linspace(0, bad.size - 1, min(locator_samples, bad.size)).astype(int))
        ]
        found: set[int] = set()
        for coordinate in sample:
            decoder_calls += 1
            decoded = berlekamp_welch(
                points, [int(shares[x][coordinate]) for x in points], threshold, limit
            )
            if decoded is None:
                return ReconstructionResult(
                    None,
                    True,
                    f"coordinate {int(coordinate)} has more than max_errors={limit} wrong shares",
                    tuple(sorted(excluded)),
                    (),
                    received - threshold,
                    limit,
                    decoder_calls,
                )
            found.update(points[i] for i in decoded[1])
        if found <= excluded or len(excluded | found) > limit:
            return ReconstructionResult(
                None,
                True,
                f"error locations {sorted(excluded | found)} exceed max_errors={limit} "
                f"or do not explain the disagreement",
                tuple(sorted(excluded | found)),
                (),
                received - threshold,
                limit,
                decoder_calls,
            )
        excluded |= found
