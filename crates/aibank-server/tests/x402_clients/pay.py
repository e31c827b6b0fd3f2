"""Pay for one HTTP request with the official x402 Python client (`x402[httpx,evm]`).

Makes the request through the SDK's httpx transport, which answers a 402 by signing an
EIP-3009 transferWithAuthorization ("exact" scheme) and retrying with X-PAYMENT (x402 v1)
or PAYMENT-SIGNATURE (v2). Prints one JSON line:
    {"status", "body", "headers", "payment_response"}
and exits non-zero only when the client raises (the message goes to stderr).

--version 1 registers only the v1 scheme (legacy network names such as "base-sepolia"),
--version 2 only the v2 scheme (CAIP-2 "eip155:*"), and without it both, as the SDK's
register_exact_evm_client does. Which protocol is spoken is the server's choice: the
client reads the PAYMENT-REQUIRED header (v2) first and falls back to a v1 JSON body.
Signing is local; no RPC endpoint is contacted.

Install: python3 -m pip install -r requirements.txt (beside this file).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys

import httpx
from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact.client import ExactEvmScheme
from x402.mechanisms.evm.exact.v1.client import ExactEvmSchemeV1
from x402.mechanisms.evm.v1.constants import V1_NETWORKS


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--private-key", required=True, help="secp256k1 key, hex (0x optional)")
    p.add_argument("--method", default="GET", type=str.upper)
    p.add_argument("--json", dest="json_body", help="request body, sent as application/json")
    p.add_argument("--version", type=int, choices=(1, 2), help="register only this x402 version")
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--no-spend-controls", action="store_true",
                   help="lift the SDK's default $1 cap / default-asset allowlist")
    p.add_argument("--timeout", type=float, default=30.0)
    return p.parse_args(argv)


def build_client(key: str, version: int | None, spend_controls: bool) -> x402Client:
    account = Account.from_key(key if key.startswith("0x") else "0x" + key)
    client = x402Client()
    if version in (None, 2):
        client.register("eip155:*", ExactEvmScheme(account))
    if version in (None, 1):
        v1 = ExactEvmSchemeV1(account)
        for network in V1_NETWORKS:
            client.register_v1(network, v1)
    if not spend_controls:
        client.set_spend_controls(False)
    return client


def decode_settlement(headers: httpx.Headers) -> dict | str | None:
    raw = headers.get("payment-response") or headers.get("x-payment-response")
    if not raw:
        return None
    try:
        decode_payment_response_header(raw)  # what the SDK itself accepts
    except Exception as e:  # noqa: BLE001 - report, keep the raw decode below
        print(f"warning: the SDK rejects the settlement header: {e}", file=sys.stderr)
    try:
        return json.loads(base64.b64decode(raw))
    except Exception:  # noqa: BLE001
        return raw


async def run(args: argparse.Namespace) -> dict:
    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            raise SystemExit(f"--header needs NAME:VALUE, got {h!r}")
        headers[name.strip()] = value.strip()
    content = None
    if args.json_body is not None:
        json.loads(args.json_body)  # fail early on a malformed body
        content = args.json_body.encode()
        headers.setdefault("Content-Type", "application/json")

    client = build_client(args.private_key, args.version, not args.no_spend_controls)
    async with x402HttpxClient(client, timeout=args.timeout) as http:
        resp = await http.request(args.method, args.url, headers=headers, content=content)
        await resp.aread()
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    return {
        "status": resp.status_code,
        "body": body,
        "headers": {k.lower(): v for k, v in resp.headers.items()},
        "payment_response": decode_settlement(resp.headers),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        out = asyncio.run(run(args))
    except Exception as e:  # noqa: BLE001 - any client failure is the result
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
