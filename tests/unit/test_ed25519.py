"""Ed25519 signing (issue 17, finding 6): workers verify, only the publisher signs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from engine.cli.main import main
from models.ed25519 import generate_keypair, load_private_key, load_public_keys, sign, verify
from models.errors import SignatureRefused, SigningKeyError, SnapshotRefused


def test_a_signature_verifies_with_any_trusted_key_for_rotation() -> None:
    old_private, old_public = generate_keypair()
    _, new_public = generate_keypair()
    keys = load_public_keys([new_public, old_public])
    verify(keys, "beacon-rules/1", b"m", sign(load_private_key(old_private), "beacon-rules/1", b"m"))


def test_a_signature_by_an_untrusted_key_is_refused() -> None:
    private, _ = generate_keypair()
    _, trusted = generate_keypair()
    with pytest.raises(SignatureRefused, match="untrusted key"):
        verify(load_public_keys([trusted]), "d", b"m", sign(load_private_key(private), "d", b"m"))


def test_a_tampered_message_is_refused() -> None:
    private, public = generate_keypair()
    sig = sign(load_private_key(private), "d", b"m")
    with pytest.raises(SignatureRefused, match="bad Ed25519 signature"):
        verify(load_public_keys([public]), "d", b"m2", sig)


def test_an_hmac_signature_is_refused() -> None:
    _, public = generate_keypair()
    with pytest.raises(SignatureRefused, match="HMAC"):
        verify(load_public_keys([public]), "d", b"m", "ab" * 32)


def test_a_private_key_among_public_keys_is_refused() -> None:
    private, _ = generate_keypair()
    with pytest.raises(SigningKeyError, match="PRIVATE"):
        load_public_keys([private])


def test_keys_generate_writes_a_private_file_only_the_owner_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", str(tmp_path / "k")]) == 0
    mode = stat.S_IMODE((tmp_path / "k" / "signing.key").stat().st_mode)
    assert mode == 0o600
    load_private_key((tmp_path / "k" / "signing.key").read_bytes())
    load_public_keys([(tmp_path / "k" / "signing.pub").read_bytes()])
    assert main(["keys", "generate", str(tmp_path / "k")]) == 2  # never overwrites


def test_the_key_a_worker_holds_cannot_sign_a_snapshot_workers_load() -> None:
    """Finding 6: with HMAC every worker held the key that signs snapshots. Now a worker
    holds public keys only: they cannot sign, and a key it makes up is not trusted."""
    from models.signing import pickle_model, seal, unseal

    private, public = generate_keypair()
    worker_holds = load_public_keys([public])  # all a worker has
    with pytest.raises(SigningKeyError):
        load_private_key(public)
    own_private, _ = generate_keypair()  # a compromised worker's own key
    forged = seal("churn", 9, pickle_model({"evil": True}), {}, load_private_key(own_private))
    with pytest.raises(SnapshotRefused, match="untrusted key"):
        unseal("churn", forged.version, forged.record, forged.payload, worker_holds)
    genuine = seal("churn", 9, pickle_model({"w": 1}), {}, load_private_key(private))
    assert unseal("churn", genuine.version, genuine.record, genuine.payload, worker_holds)[0] == {"w": 1}


def test_the_hmac_model_signing_key_is_refused_with_what_replaces_it(tmp_path: Path) -> None:
    from engine.errors import ConfigError
    from engine.settings import Settings

    with pytest.raises(ConfigError, match="BEACON_MODEL_SIGNING_KEY: replaced by Ed25519 keys"):
        Settings.build(env={"BEACON_MODEL_SIGNING_KEY": "x" * 40})
    toml = tmp_path / "beacon.toml"
    toml.write_text('model_signing_key = "' + "x" * 40 + '"\n')
    with pytest.raises(ConfigError, match="BEACON_SIGNING_KEY_FILE"):
        Settings.build(env={}, config_file=toml)


def test_a_worker_refuses_to_start_holding_the_private_key(tmp_path: Path) -> None:
    from engine.cli.main import run_worker
    from engine.errors import BeaconError
    from engine.settings import Settings

    settings = Settings.build(env={}).replace(signing_key_file=str(tmp_path / "signing.key"))
    with pytest.raises(BeaconError, match="worker refuses to start with BEACON_SIGNING_KEY_FILE"):
        run_worker(settings)
