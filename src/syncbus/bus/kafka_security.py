"""How syncbus's Kafka clients reach a secured cluster: TLS (with a private CA, mutual TLS) and SASL.

One model for the three places that talk to Kafka -- the bus (options on the
``kafka://`` URL), the ``kafka`` sink and the ``kafka`` source (``tls:`` and
``sasl:`` blocks, as in Redpanda Connect) -- and one function turning it into
aiokafka's keyword arguments, so every producer, consumer, admin client and
probe of a process connects the same way.

Why the diagnosis: aiokafka reports any failed bootstrap as "Unable to
bootstrap", whether the password was wrong, the broker's certificate is not
trusted or the port is closed; the real cause only goes to its log. A wrong
password or an untrusted certificate will never heal by waiting, so
``diagnose`` opens one connection with the same settings and returns the
cause as a class (:class:`KafkaAuthFailed`, :class:`KafkaTlsFailed`), which
callers map to "refused, fix the config" instead of "retry forever".

Passwords never come from a file or the bus URL (the URL shows in ``ps`` and
in logs): components take ``password_env: VAR``, the bus reads
``SYNCBUS_KAFKA_PASSWORD`` (or the variable named by ``sasl_password_env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from ..errors import BusError
from ..sinks.tls import ClientTls, tls_context

PASSWORD_ENV = "SYNCBUS_KAFKA_PASSWORD"
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
# Options of the bus URL (``kafka://h:p?tls=true&sasl_mechanism=SCRAM-SHA-512&sasl_username=syncbus``).
URL_OPTIONS = frozenset({"tls", "tls_ca_file", "tls_client_cert", "tls_client_key", "tls_verify",
                         "sasl_mechanism", "sasl_username", "sasl_password_env"})
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class KafkaSecurityError(BusError):
    """The Kafka security settings cannot be used: unknown option, missing password, unreadable file."""


class KafkaAuthFailed(BusError):
    """The cluster refused our SASL credentials (or our SASL mechanism): waiting will not change that."""


class KafkaTlsFailed(BusError):
    """The TLS handshake failed: untrusted broker certificate, wrong host name, or a client certificate
    the broker requires and did not get (or does not trust)."""


class KafkaTls(ClientTls):
    """``tls:`` -- talk TLS to the brokers (the block's presence turns it on)."""

    enabled: bool = Field(True, description="Use TLS (set false to keep the block but talk plaintext).")


class KafkaSasl(BaseModel):
    """``sasl:`` -- authenticate to the brokers with a user name and password."""

    model_config = ConfigDict(extra="forbid")

    mechanism: Mechanism = Field(description="PLAIN (only over TLS in production), SCRAM-SHA-256 or SCRAM-SHA-512.")
    username: str = Field(min_length=1, description="The Kafka user.")
    password: SecretStr = Field(description="The user's password (from the environment only: password_env: VAR).")


class KafkaSecurity(BaseModel):
    """The ``tls`` and ``sasl`` options, mixed into the kafka sink's and source's config models."""

    model_config = ConfigDict(extra="forbid")

    tls: KafkaTls | None = Field(None, description="TLS to the brokers: ca_file (private CA), client_cert and "
                                                   "client_key (mutual TLS), verify_tls.")
    sasl: KafkaSasl | None = Field(None, description="SASL authentication: mechanism, username, password_env.")

    def client_security(self) -> ClientSecurity:
        return ClientSecurity(self.tls, self.sasl)


class ClientSecurity:
    """The resolved settings of one connection target; ``kwargs`` go to every aiokafka client."""

    def __init__(self, tls: KafkaTls | None = None, sasl: KafkaSasl | None = None) -> None:
        self.tls = tls if tls is not None and tls.enabled else None
        self.sasl = sasl

    @property
    def protocol(self) -> str:
        """Kafka's ``security.protocol`` for these settings."""
        if self.sasl is not None:
            return "SASL_SSL" if self.tls is not None else "SASL_PLAINTEXT"
        return "SSL" if self.tls is not None else "PLAINTEXT"

    @cached_property
    def kwargs(self) -> dict[str, Any]:
        """aiokafka's keyword arguments; the SSL context is built once (files are read here)."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls is not None:
            out["ssl_context"] = _context(self.tls)
        if self.sasl is not None:
            out.update(sasl_mechanism=self.sasl.mechanism, sasl_plain_username=self.sasl.username,
                       sasl_plain_password=self.sasl.password.get_secret_value())
        return out

    def describe(self) -> str:
        """For messages: the protocol and user, never the password."""
        if self.sasl is None:
            return self.protocol
        return f"{self.protocol}, {self.sasl.mechanism} as {self.sasl.username!r}"


PLAINTEXT = ClientSecurity()


def load_security(config: KafkaSecurity, label: str) -> ClientSecurity:
    """``config``'s settings with the CA and certificate files read now, when a component is built.

    A missing or unreadable file then stops the load with ``label`` (which
    sink or source) and the path, instead of failing every connection later.
    """
    security = config.client_security()
    try:
        security.kwargs  # noqa: B018 -- builds the SSL context
    except KafkaSecurityError as err:
        raise KafkaSecurityError(f"{label}: {err}") from None
    return security


def _context(tls: KafkaTls) -> ssl.SSLContext:
    for option in ("ca_file", "client_cert", "client_key"):
        path = getattr(tls, option)
        if path is not None and not Path(path).is_file():
            raise KafkaSecurityError(f"kafka tls {option}: {path}: no such file")
    try:
        made = tls_context(tls)
    except (OSError, ssl.SSLError) as err:
        raise KafkaSecurityError(f"kafka tls: cannot load the CA or client certificate: {err}") from None
    if isinstance(made, ssl.SSLContext):
        return made
    # verify_tls: false and no client certificate: still TLS, without checks (a test cluster).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _flag(options: Mapping[str, str], name: str) -> bool | None:
    raw = options.get(name)
    if raw is None:
        return None
    word = raw.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise KafkaSecurityError(f"kafka bus URL: {name}={raw!r}: expected true or false")


def from_url_options(options: Mapping[str, str], env: Mapping[str, str]) -> ClientSecurity:
    """The security of a bus URL's options; the password comes from ``env`` only."""
    if "sasl_password" in options or "password" in options:
        raise KafkaSecurityError(f"kafka bus URL: a password does not belong in the URL (it shows in process "
                                 f"lists and logs); set {PASSWORD_ENV} or name a variable with sasl_password_env")
    tls_files = {k: options[k] for k in ("tls_ca_file", "tls_client_cert", "tls_client_key") if k in options}
    use_tls = _flag(options, "tls")
    verify = _flag(options, "tls_verify")
    if use_tls is None:
        use_tls = bool(tls_files) or verify is not None
    tls = None
    if use_tls:
        tls = KafkaTls(enabled=True, verify_tls=True if verify is None else verify,
                       ca_file=tls_files.get("tls_ca_file"),
                       client_cert=tls_files.get("tls_client_cert"), client_key=tls_files.get("tls_client_key"))
    elif tls_files or verify is not None:
        raise KafkaSecurityError("kafka bus URL: tls=false with tls_* options; drop one of them")
    sasl = None
    mechanism, username = options.get("sasl_mechanism"), options.get("sasl_username")
    if mechanism or username:
        if not (mechanism and username):
            raise KafkaSecurityError("kafka bus URL: SASL needs both sasl_mechanism and sasl_username")
        variable = options.get("sasl_password_env") or PASSWORD_ENV
        password = env.get(variable)
        if not password:
            raise KafkaSecurityError(f"kafka bus URL: SASL user {username!r} needs a password in ${variable}, "
                                     f"which is not set")
        try:
            sasl = KafkaSasl(mechanism=mechanism.upper(), username=username,  # type: ignore[arg-type]
                             password=SecretStr(password))
        except ValidationError:
            raise KafkaSecurityError(f"kafka bus URL: sasl_mechanism={mechanism!r}: expected PLAIN, "
                                     f"SCRAM-SHA-256 or SCRAM-SHA-512") from None
    elif "sasl_password_env" in options:
        raise KafkaSecurityError("kafka bus URL: sasl_password_env without sasl_mechanism and sasl_username")
    return ClientSecurity(tls, sasl)


async def diagnose(bootstrap: str, security: ClientSecurity, timeout: float = 10.0) -> BusError | None:
    """Why a client could not bootstrap, if the reason is ours to fix (credentials, TLS); else None.

    Opens one connection to the first broker with the same settings. ``None``
    means the broker could not be reached at all (down, wrong port), which
    the callers treat as passing.
    """
    from aiokafka import errors as kafka_errors
    from aiokafka.conn import create_conn

    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    kwargs = dict(security.kwargs)
    kwargs.pop("security_protocol")
    where = f"{bootstrap} ({security.describe()})"
    try:
        conn = await asyncio.wait_for(
            create_conn(host.strip("[]"), int(port), security_protocol=security.protocol,
                        request_timeout_ms=int(timeout * 1000), **kwargs), timeout)
    except (kafka_errors.SaslAuthenticationFailed, kafka_errors.AuthenticationFailedError,
            kafka_errors.UnsupportedSaslMechanismError, kafka_errors.IllegalSaslStateError) as err:
        return KafkaAuthFailed(f"kafka {where}: authentication refused: {_reason(err)}")
    except ssl.SSLCertVerificationError as err:
        return KafkaTlsFailed(f"kafka {where}: the broker's TLS certificate is not trusted "
                              f"({err.verify_message}); set the CA file (tls ca_file) that signed it")
    except ssl.SSLError as err:
        return KafkaTlsFailed(f"kafka {where}: TLS handshake failed ({err.reason or err}); does the broker "
                              f"speak TLS on this port, and does it require a client certificate?")
    except (ConnectionRefusedError, TimeoutError):
        return None  # nobody there: the broker is down or the address is wrong, which may pass
    except (OSError, kafka_errors.KafkaError):
        # Reached, then dropped: a TLS mismatch or a client certificate the broker wants.
        return await _tls_mismatch(host.strip("[]"), int(port), security, where, timeout)
    with contextlib.suppress(Exception):
        conn.close()
    return None


async def connect_error(bootstrap: str, security: ClientSecurity, err: BaseException, what: str) -> BusError:
    """The error for a client that could not connect: the diagnosed cause (credentials, TLS) when there is one."""
    cause = await diagnose(bootstrap, security)
    if cause is not None:
        return cause
    return BusError(f"kafka bus {bootstrap}: {what}: {err}")


async def _tls_mismatch(host: str, port: int, security: ClientSecurity, where: str,
                        timeout: float) -> BusError | None:
    """The broker took the TCP connection and hung up: find out whether TLS is why.

    * we speak plaintext to a TLS port: a handshake (without checks) succeeds;
    * we speak TLS to a plaintext port: the handshake itself fails;
    * the broker requires a client certificate it trusts: with TLS 1.3 its
      refusal arrives after our side of the handshake, as an alert on the
      first read (a content broker just waits for a request: the read times out).
    """
    if security.tls is None:
        probe = ssl.create_default_context()
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        opened = await _open_tls(host, port, probe, timeout)
        if isinstance(opened, tuple):
            await _close(opened[1])
            return KafkaTlsFailed(f"kafka {where}: the broker speaks TLS on this port; turn TLS on (tls: ..., or "
                                  f"tls=true on the bus URL)")
        return None
    opened = await _open_tls(host, port, security.kwargs["ssl_context"], timeout)
    if isinstance(opened, ssl.SSLError | ConnectionResetError):
        return KafkaTlsFailed(f"kafka {where}: TLS handshake failed ({_ssl_reason(opened)}); does the broker speak "
                              f"TLS on this port?")
    if not isinstance(opened, tuple):
        return None
    reader, writer = opened
    try:
        refused = await asyncio.wait_for(reader.read(1), min(timeout, 2.0)) == b""
    except ssl.SSLError:
        refused = True
    except (OSError, TimeoutError):
        refused = False
    finally:
        await _close(writer)
    if not refused:
        return None
    return KafkaTlsFailed(f"kafka {where}: the broker ended the TLS connection after the handshake; it requires a "
                          f"client certificate it trusts (tls client_cert and client_key)")


async def _open_tls(host: str, port: int, context: ssl.SSLContext, timeout: float
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | BaseException:
    try:
        return await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context, server_hostname=host),
                                      timeout)
    except (OSError, TimeoutError, ssl.SSLError) as err:
        return err


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


def _ssl_reason(err: BaseException) -> str:
    return str(getattr(err, "reason", None) or str(err) or type(err).__name__)


def _reason(err: BaseException) -> str:
    text = str(err)
    return text.split(": ", 1)[1] if text.startswith("[Error") and ": " in text else text or type(err).__name__


__all__ = ["PASSWORD_ENV", "PLAINTEXT", "URL_OPTIONS", "ClientSecurity", "KafkaAuthFailed", "KafkaSasl",
           "KafkaSecurity", "KafkaSecurityError", "KafkaTls", "KafkaTlsFailed", "connect_error", "diagnose",
           "from_url_options", "load_security"]
