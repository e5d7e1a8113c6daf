"""Secure by default: CURVE keys and MQTT passwords from private files; strangers are refused."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess

import pytest

from controller.security import generate_curve_keys, load_curve_keypair, read_secret_file
from controller.transports import BusConfig, connect
from controller.transports.zmq_bus import ZmqHub
from twin.errors import TransportError


def run(coro, timeout=30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_keys_are_private_and_loadable(tmp_path):
    public, secret = generate_curve_keys(tmp_path, "hub")
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600"
    pub, sec = load_curve_keypair(secret)
    assert len(pub) == len(sec) == 40
    with pytest.raises(TransportError, match="already exists"):
        generate_curve_keys(tmp_path, "hub")
    os.chmod(secret, 0o640)
    with pytest.raises(TransportError, match="chmod 600"):
        load_curve_keypair(secret)
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    os.chmod(pw, 0o604)
    with pytest.raises(TransportError, match="group or others"):
        read_secret_file(pw, "transport.password_file")
    os.chmod(pw, 0o600)
    assert read_secret_file(pw, "transport.password_file").strip() == "s3cret"


def test_keys_cli_writes_private_files(tmp_path):
    from controller.cli import main

    assert main(["keys", "hub", "irs0", "--dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub.key", "hub.key_secret", "irs0.key", "irs0.key_secret"]
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in tmp_path.glob("*.key_secret"))


def test_curve_accepts_allowed_keys_and_counts_strangers(tmp_path):
    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    generate_curve_keys(keys, "hub")
    for name in ("good", "stranger"):
        generate_curve_keys(keys, name)
    (allowed / "good.key").write_text((keys / "good.key").read_text())
    hub_cfg = BusConfig(kind="zmq", pub_port=0, sub_port=0, curve_server_secret=str(keys / "hub.key_secret"),
                        curve_allowed_dir=str(allowed))
    hub = ZmqHub(hub_cfg).start()
    base = BusConfig(kind="zmq", pub_port=hub.pub_port, sub_port=hub.sub_port,
                     curve_server_public=str(keys / "hub.key"))
    good = dataclasses.replace(base, curve_client_secret=str(keys / "good.key_secret"))
    stranger = dataclasses.replace(base, curve_client_secret=str(keys / "stranger.key_secret"))
    plain = BusConfig(kind="zmq", pub_port=hub.pub_port, sub_port=hub.sub_port)

    import controller.transports.zmq_bus as zb

    orig = zb.ZmqTransport._probe

    async def quick(self, timeout):
        return await orig(self, min(timeout, 1.0))

    async def go():
        a = await connect(good, "a")
        b = await connect(good, "b")
        sub = await b.subscribe("act/")
        await a.publish("act/x", b"hello")
        assert await sub.get(3) == ("act/x", b"hello")
        zb.ZmqTransport._probe = quick
        try:
            for cfg in (stranger, plain):
                with pytest.raises(TransportError, match="CURVE keys"):
                    await connect(cfg, "intruder")
        finally:
            zb.ZmqTransport._probe = orig
        with pytest.raises(asyncio.TimeoutError):
            await sub.get(0.3)          # nothing from the intruders got through
        await a.close()
        await b.close()

    try:
        run(go())
        assert hub.auth_denied >= 1          # the stranger's key was refused by ZAP
        assert hub.handshake_failures >= 2   # stranger and key-less client failed the handshake
    finally:
        hub.close()


@pytest.mark.mqtt
def test_mqtt_password_from_private_file(tmp_path):
    from tests.controller.conftest import Broker

    passwd = tmp_path / "passwd"
    subprocess.run(["/usr/bin/mosquitto_passwd", "-b", "-c", str(passwd), "irs0", "pa55"], check=True,
                   capture_output=True)
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false")
                           + f"password_file {passwd}\n")
    pwfile = tmp_path / "irs0.pw"
    pwfile.write_text("pa55\n")
    os.chmod(pwfile, 0o600)
    broker.start()
    try:
        cfg = BusConfig(kind="mqtt", mqtt_port=broker.port, username="irs0", password_file=str(pwfile))

        async def go():
            t = await connect(cfg, "irs0")
            sub = await t.subscribe("hb/")
            await t.publish("hb/irs0", b"1")
            assert await sub.get(3) == ("hb/irs0", b"1")
            await t.close()
            wrong = tmp_path / "wrong.pw"
            wrong.write_text("nope")
            os.chmod(wrong, 0o600)
            with pytest.raises(TransportError, match="broker"):
                await connect(dataclasses.replace(cfg, password_file=str(wrong)), "x")

        run(go())
    finally:
        broker.stop()


@pytest.mark.mqtt
def test_mqtt_over_tls_with_a_private_ca(tmp_path):
    import shutil

    from tests.controller.conftest import Broker

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    ca_key, ca, key, csr, crt = (tmp_path / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt"))
    ext = tmp_path / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for argv in (
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=ristwin-test-ca",
         "-keyout", ca_key, "-out", ca],
        ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-days", "1",
         "-extfile", ext, "-out", crt],
    ):
        subprocess.run(["openssl", *map(str, argv)], check=True, capture_output=True)
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text() + f"cafile {ca}\ncertfile {crt}\nkeyfile {key}\n")
    broker.start()
    try:
        cfg = BusConfig(kind="mqtt", mqtt_port=broker.port, tls_ca=str(ca))

        async def go():
            t = await connect(cfg, "tls")
            sub = await t.subscribe("hb/")
            await t.publish("hb/x", b"encrypted")
            assert await sub.get(3) == ("hb/x", b"encrypted")
            await t.close()
            from controller.transports.mqtt_bus import MqttTransport

            plain = MqttTransport(dataclasses.replace(cfg, tls_ca=""), "plain")
            plain.connect_timeout_s = 1.0
            with pytest.raises(TransportError):      # a plain-TCP client cannot talk to a TLS listener
                await plain.start()
            await plain.close()

        run(go())
    finally:
        broker.stop()
