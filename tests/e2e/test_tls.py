"""HTTPS as `make up` serves it: the demo authority's certificate on the hub and the provider,
plain http redirected, Secure cookies and HSTS on the hub and on an engineer's server; and the
proxy's check of a team's own certificate, which stops a wrong one before anything starts."""

import datetime
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests

from .hubclient import HubUser, ServerClient
from .stack import IMAGE_TAG, ROOT, compose, docker

# The system's store (this machine's, and the images'): it knows nothing of the demo authority.
SYSTEM_STORE = "/etc/ssl/certs/ca-certificates.crt"


@pytest.fixture(scope="module")
def tls_stack(stack):
    if not stack.config.tls:
        pytest.skip("the test stack runs without TLS")
    return stack


def handshake(port: int, context: ssl.SSLContext) -> dict:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.getpeercert()


@pytest.mark.parametrize("which", ["hub", "idp"])
def test_the_hub_and_the_provider_present_a_certificate_of_the_demo_authority(tls_stack, which):
    port = tls_stack.config.hub_port if which == "hub" else tls_stack.config.idp_port
    trusting = ssl.create_default_context(cafile=str(tls_stack.config.ca_file))
    names = dict(handshake(port, trusting)["subjectAltName"])
    assert names["IP Address"] == "127.0.0.1"
    # Verified, not just encrypted: a client that does not trust the demo authority is refused.
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(port, ssl.create_default_context(cafile=SYSTEM_STORE))


def test_plain_http_is_redirected_to_https(tls_stack):
    answer = requests.get(
        f"http://127.0.0.1:{tls_stack.config.hub_http_port}/hub/login?next=%2Fhub%2Fhome",
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 301
    assert answer.headers["Location"] == f"{tls_stack.hub_url}/hub/login?next=%2Fhub%2Fhome"


def test_login_and_spawn_over_https_with_secure_cookies_and_hsts(tls_stack):
    bob = HubUser(tls_stack.hub_url, "bob")
    answer = bob.sign_in(tls_stack.demo_password)
    assert answer.status_code == 302
    assert answer.url.startswith("https://")
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
    bob.start_server()
    # Through the browser's path into the server: the server's own OAuth with the hub.
    lab = bob.session.get(f"{tls_stack.hub_url}/user/bob/lab", timeout=30)
    assert lab.status_code == 200, lab.text[:300]
    assert lab.url == f"{tls_stack.hub_url}/user/bob/lab"
    assert lab.headers["Strict-Transport-Security"].startswith("max-age=")
    names = {cookie.name for cookie in bob.session.cookies}
    assert {"jupyterhub-hub-login", "_xsrf", "jupyterhub-user-bob"} <= names, names
    insecure = [cookie.name for cookie in bob.session.cookies if not cookie.secure]
    assert insecure == []
    token = bob.new_token()
    contents = ServerClient(tls_stack.hub_url, "bob", token).get("")
    assert contents.status_code == 200
    assert contents.headers["Strict-Transport-Security"].startswith("max-age=")
    bob.stop_server()


def test_the_hub_verifies_the_provider_with_the_demo_authority(tls_stack):
    """The hub container trusts the provider through the bundle init-secrets.sh made, and only
    through it: the images' store alone refuses the provider's certificate."""
    container = compose("ps", "-q", "hub", config=tls_stack.config).stdout.strip()
    probe = (
        "import ssl, sys, urllib.request\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[1] or None)\n"
        "urllib.request.urlopen('https://idp:9000/healthz', context=ctx, timeout=10)\n"
    )
    trusted = docker("exec", container, "python3", "-c", probe, "", check=False)
    assert trusted.returncode == 0, trusted.stderr
    untrusted = docker("exec", container, "python3", "-c", probe, SYSTEM_STORE, check=False)
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_wait_ready_checks_https_and_says_how_to_trust_the_authority(tls_stack):
    done = subprocess.run(
        ["bash", "scripts/wait-ready.sh", str(tls_stack.config.env_file), "60"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert f"Opsbook is up: {tls_stack.hub_url}" in done.stdout
    assert str(tls_stack.config.ca_file) in done.stdout
    assert "redirected to https" in done.stdout


# --- the proxy's check of a team's own certificate (TLS_MODE=files), on the proxy's image ---


def make_certificate(folder: Path, name: str, host: str, days: int = 30) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def proxy_check(cert: Path, key: Path, public_url: str) -> subprocess.CompletedProcess:
    return docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "node",
        "-e", "TLS_MODE=files", "-e", f"OAUTH_CALLBACK_URL={public_url}/hub/oauth_callback",
        "-e", f"OPSBOOK_TLS_CERT={cert}", "-e", f"OPSBOOK_TLS_KEY={key}",
        "-v", f"{cert.parent}:{cert.parent}:ro",
        f"opsbook/proxy:{IMAGE_TAG}", "/opt/proxy/tls-settings.js",
        check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def team_files(stack, tmp_path_factory):
    folder = tmp_path_factory.mktemp("team-tls")
    good = make_certificate(folder, "good", "opsbook.example.test")
    other = make_certificate(folder, "other", "opsbook.example.test")
    expired = make_certificate(folder, "expired", "opsbook.example.test", days=-1)
    return folder, good, other, expired


def test_a_teams_matching_certificate_passes_and_gives_the_proxy_its_arguments(team_files):
    _, (cert, key), _, _ = team_files
    done = proxy_check(cert, key, "https://opsbook.example.test")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        f"--ssl-cert={cert}",
        f"--ssl-key={key}",
        "--redirect-port=8080",
        "--redirect-to=443",
    ]


def test_a_key_of_another_certificate_is_refused(team_files):
    _, (cert, _), (_, other_key), _ = team_files
    done = proxy_check(cert, other_key, "https://opsbook.example.test")
    assert done.returncode == 1
    assert (
        f"TLS_KEY_FILE: expected the private key of TLS_CERT_FILE's certificate, got '{other_key}'"
        in (done.stderr)
    )


def test_a_certificate_for_another_host_is_refused(team_files):
    _, (cert, key), _, _ = team_files
    done = proxy_check(cert, key, "https://hub.elsewhere.test:8443")
    assert done.returncode == 1
    assert "TLS_CERT_FILE: expected a certificate for hub.elsewhere.test" in done.stderr
    assert "DNS:opsbook.example.test" in done.stderr


def test_an_expired_certificate_and_a_missing_key_are_refused(team_files):
    folder, _, _, (expired, expired_key) = team_files
    done = proxy_check(expired, expired_key, "https://opsbook.example.test")
    assert "TLS_CERT_FILE: expected a certificate still valid" in done.stderr
    missing = folder / "missing.key"
    done = proxy_check(expired, missing, "https://opsbook.example.test")
    assert done.returncode == 1
    expected = "TLS_KEY_FILE: expected a readable PEM private key without a passphrase"
    assert f"{expected}, got '{missing}' (no such file)" in done.stderr


def test_an_http_public_url_is_refused_when_tls_is_on(team_files):
    _, (cert, key), _, _ = team_files
    done = proxy_check(cert, key, "http://opsbook.example.test")
    assert done.returncode == 1
    assert "OAUTH_CALLBACK_URL: expected an https URL (TLS_MODE is files)" in done.stderr
