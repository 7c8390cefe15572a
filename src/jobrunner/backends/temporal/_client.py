"""Connecting to Temporal with a short timeout and a clear error."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.service import RetryConfig

from jobrunner._errors import ConfigurationError, UnavailableError

#: Seconds to wait for Temporal when connecting before giving up (and maybe falling back).
DEFAULT_CONNECT_TIMEOUT = 5.0


def tls_config(cert: str | None, key: str | None, ca: str | None) -> TLSConfig | None:
    """A TLS configuration from PEM file paths (``None`` when none is given)."""
    if not (cert or key or ca):
        return None
    if bool(cert) != bool(key):
        raise ConfigurationError("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together")

    def read(path: str | None, what: str) -> bytes | None:
        if not path:
            return None
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {what} {path!r}: {exc}") from exc

    return TLSConfig(
        server_root_ca_cert=read(ca, "TEMPORAL_TLS_CA"),
        client_cert=read(cert, "TEMPORAL_TLS_CERT"),
        client_private_key=read(key, "TEMPORAL_TLS_KEY"),
    )


async def connect(
    address: str,
    *,
    namespace: str = "default",
    tls: TLSConfig | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Client:
    """Connect to Temporal at ``address``.

    Raises:
        UnavailableError: Temporal did not answer within ``timeout`` seconds (the message names
            the address).
    """
    try:
        return await asyncio.wait_for(
            Client.connect(
                address,
                namespace=namespace,
                tls=tls if tls is not None else False,
                connect_timeout=timedelta(seconds=timeout),
                # Fail fast at connect time; the SDK's own retries would outlast the timeout.
                retry_config=RetryConfig(
                    max_retries=1, max_elapsed_time_millis=int(timeout * 1000)
                ),
            ),
            timeout,
        )
    except (TimeoutError, RuntimeError, OSError, ConnectionError) as exc:
        raise UnavailableError(
            f"cannot connect to Temporal at {address} (namespace {namespace}): "
            f"{exc or type(exc).__name__}"
        ) from exc
    except Exception as exc:
        raise UnavailableError(
            f"cannot connect to Temporal at {address} (namespace {namespace}): {exc}"
        ) from exc
