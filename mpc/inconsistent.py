"""A Byzantine Shamir dealer: validly encrypted shares that do not lie on one polynomial.

Honest dealing (:meth:`mpc.ShamirMember.deal`) gives holder j the value p(j) of one polynomial
of degree < T (T = t + l - 1, the code dimension). :func:`deal_inconsistent` gives the holders in
``affected`` the values p'(j) of a second polynomial instead, sharing ``other_secret``, and
everyone else p(j); every share is sealed for its holder like an honest one, so it passes the
holder's AES-GCM and length checks.

What the holders' partial sums then are (shares are linear): with Q the sum of the other
dealers' polynomials, holder j sends (Q + p)(j) if j is unaffected and (Q + p')(j) otherwise,
i.e. a Reed-Solomon codeword of Q + p with errors exactly at the affected holders. With r
partial sums received, Berlekamp-Welch (:func:`mpc.reconstruct_robust`) corrects
e = floor((r - T) / 2) wrong ones (:func:`correctable_holders`), counted over every source of
error in the round (lying holders included), so:

- ``a <= e`` affected holders (and no other errors): the sum is exactly the one with p, as if the
  dealer had dealt honestly, and the affected holders are named as liars;
- ``r - a <= e``: the sum is the one with p' (the dealer in effect shared ``other_secret``) and
  the unaffected holders are named;
- otherwise: the reconstruction is reported as failed, never as a wrong sum.

The aggregator sees only partial sums over the whole dealer set, so it cannot tell a dealer's
inconsistency from a holder's lie: the blame falls on the holders. Naming the dealer needs
verifiable secret sharing (e.g. Feldman 1987 commitments checked by each holder).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from phalanx.mpc.field import FieldVector
from phalanx.mpc.messages import EncryptedShare, KeyAdvertisement
from phalanx.mpc.shamir_protocol import ShamirMember

__all__ = ["correctable_holders", "deal_inconsistent"]


def correctable_holders(received: int, reconstruction_threshold: int) -> int:
    """Wrong partial sums Berlekamp-Welch corrects among ``received``: floor((r - T) / 2), the
    unique-decoding radius of a Reed-Solomon code of length r and dimension T (0 when r <= T)."""
    return max(0, (received - reconstruction_threshold) // 2)


def deal_inconsistent(
    member: ShamirMember,
    encoded_update: FieldVector,
    advertisements: Mapping[str, KeyAdvertisement],
    affected: Collection[str],
    other_secret: FieldVector,
) -> dict[str, EncryptedShare]:
    """Deal like :meth:`ShamirMember.deal`, but the holders in ``affected`` get shares of a
    separate sharing of ``other_secret`` (a second polynomial). The dealer keeps its own share of
    ``encoded_update``'s polynomial; the rest of the member's state is what an honest deal
    leaves."""
    off_polynomial = member.deal(other_secret, advertisements)
    # Dealt last, so that the dealer's own held share and state are the honest deal's.
    on_polynomial = member.deal(encoded_update, advertisements)
    return {
        recipient: off_polynomial[recipient] if recipient in affected else share
        for recipient, share in on_polynomial.items()
    }
