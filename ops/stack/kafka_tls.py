"""A self-signed certificate for a local SASL_SSL broker, made with the JDK's `keytool`."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .kafka_config import Certificates
from .process import StackError, require_binary


def make_certificates(directory: Path, *, password: str = "changeit") -> Certificates:
    """A self-signed certificate for 127.0.0.1 / localhost, valid 2 days, via `keytool`."""
    keytool = require_binary("keytool", hint="Install a Java 17+ JDK/JRE (it ships keytool).")
    directory.mkdir(parents=True, exist_ok=True)
    certs = Certificates(
        keystore=directory / "broker.p12",
        truststore=directory / "trust.p12",
        ca_pem=directory / "ca.pem",
        password=password,
    )
    for path in (certs.keystore, certs.truststore, certs.ca_pem):
        path.unlink(missing_ok=True)
    store = ["-storetype", "PKCS12", "-storepass", password]
    san = "SAN=ip:127.0.0.1,dns:localhost"
    steps = [
        [
            *("-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048"),
            *("-validity", "2", "-dname", "CN=localhost", "-ext", san),
            *("-keystore", str(certs.keystore), "-keypass", password, *store),
        ],
        [
            *("-exportcert", "-rfc", "-alias", "broker", "-keystore", str(certs.keystore)),
            *("-file", str(certs.ca_pem), *store),
        ],
        [
            *("-importcert", "-noprompt", "-alias", "ca", "-file", str(certs.ca_pem)),
            *("-keystore", str(certs.truststore), *store),
        ],
    ]
    for step in steps:
        done = subprocess.run([keytool, *step], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"keytool {step[0]} failed: {done.stdout}{done.stderr}")
    return certs
