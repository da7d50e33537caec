"""The broker's security files (keys, tenants, admins, private topics) and the crypto helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import rembus_proto as rp
from rembus.cli.command import main
from rembus.security import crypto
from rembus.security.file_security import FileSecurity
from rembus_proto.security_port import ECDSA, RSA, PublicKey, SecurityError
from security_helpers import DER, PEM, PKCS1, SPKI, SecureNet, public_key, signature

# -- crypto ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
@pytest.mark.parametrize("encoding", [PEM, DER])
def test_verify_accepts_every_public_key_layout(kind: str, encoding: object) -> None:
    layouts = [SPKI, PKCS1] if kind == "rsa" else [SPKI]
    for layout in layouts:
        key = public_key(kind, 0, encoding, layout)  # type: ignore[arg-type]
        signed = rp.challenge_input(b"\x01\x02\x03\x04", "me")
        assert crypto.verify_signature(key, signed, signature(b"\x01\x02\x03\x04", "me", kind))
        assert not crypto.verify_signature(key, signed + b"x",
                                           signature(b"\x01\x02\x03\x04", "me", kind))
        assert crypto.check_public_key(key) == ("pem" if encoding == PEM else "der")


def test_verify_never_raises() -> None:
    assert not crypto.verify_signature(PublicKey(b"junk", RSA), b"x", b"y")
    assert not crypto.verify_signature(PublicKey(b"", ECDSA), b"x", b"y")
    assert not crypto.verify_signature(public_key("ecdsa"), b"x", b"not DER")


def test_check_public_key_refuses_unusable_keys() -> None:
    with pytest.raises(SecurityError, match="invalid public key"):
        crypto.check_public_key(PublicKey(b"-----BEGIN PUBLIC KEY-----\nnope\n", RSA))
    with pytest.raises(SecurityError, match="needs an RSA key"):
        crypto.check_public_key(PublicKey(public_key("ecdsa").data, RSA))
    with pytest.raises(SecurityError, match="needs an EC key"):
        crypto.check_public_key(PublicKey(public_key("rsa").data, ECDSA))
    small = rsa.generate_private_key(65537, 1024)
    with pytest.raises(SecurityError, match="at least 2048 bits"):
        crypto.check_public_key(PublicKey(crypto.public_pem(small), RSA))
    with pytest.raises(ValueError, match="key_type"):
        crypto.key_type_code("dsa")


# -- keys ----------------------------------------------------------------------------

def test_save_key_uses_the_upstream_layout(tmp_path: Path) -> None:
    security = FileSecurity(tmp_path)
    security.save_key("a", public_key("rsa"))
    security.save_key("b", public_key("ecdsa", 0, DER))
    files = sorted(p.name for p in (tmp_path / "keys").iterdir())
    assert files == ["a.rsa.pem", "b.ecdsa.der"]
    assert security.public_key("a") == public_key("rsa")
    assert security.public_key("b") == public_key("ecdsa", 0, DER)
    assert security.public_key("c") is None
    security.delete_key("a")
    assert security.public_key("a") is None and not (tmp_path / "keys" / "a.rsa.pem").exists()


def test_lookup_order_is_pem_then_der_rsa_then_ecdsa(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    security = FileSecurity(tmp_path)
    (keys / "x.ecdsa.der").write_bytes(public_key("ecdsa", 0, DER).data)
    assert security.public_key("x") == PublicKey(public_key("ecdsa", 0, DER).data, ECDSA)
    (keys / "x.rsa.der").write_bytes(public_key("rsa", 0, DER).data)
    assert security.public_key("x") == PublicKey(public_key("rsa", 0, DER).data, RSA)
    (keys / "x.ecdsa.pem").write_bytes(public_key("ecdsa").data)
    assert security.public_key("x") == PublicKey(public_key("ecdsa").data, ECDSA)
    (keys / "x.rsa.pem").write_bytes(public_key("rsa", 0, PEM, PKCS1).data)
    assert security.public_key("x") == PublicKey(public_key("rsa", 0, PEM, PKCS1).data, RSA)
    security.delete_key("x")
    assert list(keys.iterdir()) == []


def test_a_key_made_by_upstream_tools_logs_in(tmp_path: Path) -> None:
    """PKCS#1 PEM, as ``ssh-keygen -e -m PEM`` writes it, dropped in the keys dir."""
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jl.rsa.pem").write_bytes(public_key("rsa", 0, PEM, PKCS1).data)
    net = SecureNet(security=FileSecurity(tmp_path))
    net.login("jl")


def test_an_unreadable_key_blocks_the_login(tmp_path: Path) -> None:
    (tmp_path / "keys" / "x.rsa.pem").mkdir(parents=True)  # reading it fails
    security = FileSecurity(tmp_path)
    assert security.public_key("x") == PublicKey(b"", RSA)  # registered, unusable
    net = SecureNet(security=security)
    reply = net.connect().identify("x")
    assert reply.status == rp.Status.CHALLENGE  # not let in as a free name


@pytest.mark.parametrize("name", ["../evil", "a/b", ".secret", "", "a\x00b"])
def test_invalid_names_never_touch_files(tmp_path: Path, name: str) -> None:
    security = FileSecurity(tmp_path / "data")
    with pytest.raises(SecurityError, match="invalid name"):
        security.save_key(name, public_key())
    assert security.public_key(name) is None
    security.delete_key(name)
    assert not (tmp_path / "evil.rsa.pem").exists() and not (tmp_path / "data").exists()


def test_register_an_invalid_key_through_the_router_writes_nothing(tmp_path: Path) -> None:
    net = SecureNet(security=FileSecurity(tmp_path))
    (tmp_path / "tenants.json").write_text('{".": "1"}')
    peer = net.connect()
    reply = peer.request(lambda i: rp.Register(i, "x", "1", b"garbage", RSA))
    assert reply.status == rp.Status.GENERIC_ERROR
    assert reply.data.value.startswith("invalid public key")
    assert not (tmp_path / "keys").exists()


# -- tenants and admins -----------------------------------------------------------------

def test_tenants_and_admins_are_reread_when_their_file_changes(tmp_path: Path) -> None:
    security = FileSecurity(tmp_path)
    assert security.tenant_pin("acme") is None and not security.is_admin("boss")
    security.set_tenant("acme", "1234")
    security.add_admin("boss")
    assert security.tenant_pin("acme") == "1234" and security.is_admin("boss")
    (tmp_path / "tenants.json").write_text(json.dumps({"acme": 99, ".": "x"}))
    assert security.tenant_pin("acme") == "99" and security.tenant_pin(".") == "x"
    assert security.remove_admin("boss") and not security.is_admin("boss")
    assert not security.remove_admin("boss")
    assert security.remove_tenant("acme") and security.tenant_pin("acme") is None
    assert oct(os.stat(tmp_path / "tenants.json").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(("file", "content"), [
    ("tenants.json", "[1, 2]"), ("tenants.json", "{nope"), ("admins.json", '{"a": 1}'),
    ("topic_auth.json", '{"t": "alice"}')])
def test_malformed_files_fail_closed(tmp_path: Path, file: str, content: str) -> None:
    (tmp_path / file).write_text(content)
    security = FileSecurity(tmp_path)
    with pytest.raises(SecurityError, match=file):
        security.check()
    assert security.tenant_pin(".") is None and not security.is_admin("a")
    if file == "topic_auth.json":
        with pytest.raises(SecurityError):  # the broker refuses to start: topics stay private
            SecureNet(security=security)


def test_private_topics_are_kept_in_topic_auth_json(tmp_path: Path) -> None:
    security = FileSecurity(tmp_path)
    security.save_private_topic("t", ["b", "a"])
    security.save_private_topic("u", [])
    assert json.loads((tmp_path / "topic_auth.json").read_text()) == {"t": ["a", "b"], "u": []}
    security.save_private_topic("u", None)
    assert FileSecurity(tmp_path).private_topics() == {"t": ["a", "b"]}


# -- the command line -------------------------------------------------------------------

def test_tenant_and_admin_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path)
    assert main(["broker", "tenant", "add", "acme", "1234", "--data-dir", data]) == 0
    assert main(["broker", "--data-dir", data, "tenant", "add", ".", "0000"]) == 0
    assert main(["broker", "admin", "add", "boss", "--force", "--data-dir", data]) == 0
    capsys.readouterr()
    assert main(["broker", "tenant", "list", "--data-dir", data]) == 0
    assert capsys.readouterr().out == ".\t0000\nacme\t1234\n"
    assert main(["broker", "admin", "list", "--data-dir", data]) == 0
    assert capsys.readouterr().out == "boss\n"
    assert main(["broker", "tenant", "remove", "nope", "--data-dir", data]) == 1
    assert main(["broker", "admin", "remove", "boss", "--data-dir", data]) == 0
    assert main(["broker", "tenant", "remove", "acme", "--data-dir", data]) == 0
    security = FileSecurity(tmp_path)
    assert security.tenants() == {".": "0000"} and security.admins() == []


def test_broker_refuses_half_a_tls_setup(tmp_path: Path) -> None:
    assert main(["broker", "--data-dir", str(tmp_path), "--port", "0",
                 "--tls-cert", str(tmp_path / "c.pem")]) == 1
