"""Ed25519 identities: id derivation, signatures, allow-list, key files."""

from __future__ import annotations

import hashlib
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from phalanx.clustering.identity import (
    NODE_ID_HEX_CHARS,
    BadSignatureError,
    IdentityError,
    NodeIdentity,
    NodeIdMismatchError,
    NotAllowedError,
    check_allowed,
    node_id_from_public_key,
    signing_payload,
    verify,
    verify_message,
)


@pytest.fixture(scope="module")
def alice() -> NodeIdentity:
    return NodeIdentity.generate()


@pytest.fixture(scope="module")
def bob() -> NodeIdentity:
    return NodeIdentity.generate()


def test_node_id_is_prefix_of_sha256_of_raw_public_key(alice: NodeIdentity) -> None:
    raw = alice.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert alice.node_id == hashlib.sha256(raw).hexdigest()[:NODE_ID_HEX_CHARS]
    assert node_id_from_public_key(raw) == alice.node_id
    assert len(alice.node_id) == 16


def test_distinct_keys_give_distinct_ids(alice: NodeIdentity, bob: NodeIdentity) -> None:
    assert alice.node_id != bob.node_id


def test_valid_signature_is_accepted(alice: NodeIdentity) -> None:
    message = b"membership update"
    assert verify(alice.node_id, alice.public_key_bytes, message, alice.sign(message)) is None


def test_tampered_message_is_rejected(alice: NodeIdentity) -> None:
    signature = alice.sign(b"view: a,b,c")
    with pytest.raises(BadSignatureError, match="bad signature"):
        verify(alice.node_id, alice.public_key_bytes, b"view: a,b,x", signature)


def test_signature_by_another_key_is_rejected(alice: NodeIdentity, bob: NodeIdentity) -> None:
    message = b"cluster output"
    with pytest.raises(BadSignatureError):
        verify(alice.node_id, alice.public_key_bytes, message, bob.sign(message))


def test_claiming_another_nodes_id_is_rejected(alice: NodeIdentity, bob: NodeIdentity) -> None:
    message = b"I am alice"
    with pytest.raises(NodeIdMismatchError, match="does not match"):
        verify(alice.node_id, bob.public_key_bytes, message, bob.sign(message))


def test_truncated_signature_is_rejected(alice: NodeIdentity) -> None:
    with pytest.raises(BadSignatureError, match="64 bytes"):
        verify(alice.node_id, alice.public_key_bytes, b"m", alice.sign(b"m")[:63])


def test_allow_list(alice: NodeIdentity, bob: NodeIdentity) -> None:
    message = b"join"
    signature = bob.sign(message)
    with pytest.raises(NotAllowedError, match="allow-list"):
        verify(bob.node_id, bob.public_key_bytes, message, signature, allow_list={alice.node_id})
    verify(bob.node_id, bob.public_key_bytes, message, signature, allow_list={bob.node_id})
    check_allowed(bob.node_id, None)  # no allow-list: open membership


def test_signature_for_one_round_does_not_verify_for_another(alice: NodeIdentity) -> None:
    signature = alice.sign_message("ping", 3, b"payload")
    verify_message("ping", alice.node_id, 3, b"payload", alice.public_key, signature)
    with pytest.raises(BadSignatureError):
        verify_message("ping", alice.node_id, 4, b"payload", alice.public_key, signature)
    with pytest.raises(BadSignatureError):
        verify_message("ack", alice.node_id, 3, b"payload", alice.public_key, signature)


def test_signing_payload_is_injective_across_field_boundaries() -> None:
    assert signing_payload("ab", "c", 1, b"") != signing_payload("a", "bc", 1, b"")
    assert signing_payload("k", "s", 1, b"x") != signing_payload("k", "s", 1, b"x\x00")
    assert signing_payload("k", "s", 1, b"") != signing_payload("k", "s", 256, b"")


@pytest.mark.parametrize(
    ("kind", "sender", "round_number", "payload", "message"),
    [
        ("", "s", 0, b"", "kind"),
        ("k", "", 0, b"", "sender"),
        ("k", "s", -1, b"", "round"),
        ("k", "s", 0, "text", "payload"),
    ],
)
def test_signing_payload_rejects_bad_fields(
    kind: str, sender: str, round_number: int, payload: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        signing_payload(kind, sender, round_number, payload)


def test_bad_public_key_length_is_rejected(alice: NodeIdentity) -> None:
    with pytest.raises(IdentityError, match="32 raw Ed25519 bytes"):
        node_id_from_public_key(b"\x00" * 31)


def test_save_and_load_round_trip_with_private_mode(tmp_path, alice: NodeIdentity) -> None:
    path = tmp_path / "node.key"
    alice.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = NodeIdentity.load(path)
    assert loaded.node_id == alice.node_id
    assert loaded.public_key_bytes == alice.public_key_bytes
    with pytest.raises(FileExistsError, match="already exists"):
        alice.save(path)


def test_load_or_generate_is_stable(tmp_path) -> None:
    path = tmp_path / "identity.pem"
    first = NodeIdentity.load_or_generate(path)
    second = NodeIdentity.load_or_generate(path)
    assert first.node_id == second.node_id


def test_loading_garbage_or_a_non_ed25519_key_fails_clearly(tmp_path) -> None:
    with pytest.raises(IdentityError, match="cannot parse"):
        NodeIdentity.from_pem(b"not a key")
    ecdsa_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(IdentityError, match="expected an Ed25519"):
        NodeIdentity.from_pem(ecdsa_pem)


def test_repr_does_not_leak_key_material(alice: NodeIdentity) -> None:
    text = repr(alice)
    assert alice.node_id in text
    assert "PRIVATE" not in text and alice.to_pem().decode() not in text
