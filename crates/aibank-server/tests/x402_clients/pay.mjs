// Pay for one HTTP request with the official x402 TypeScript client (@x402/fetch + @x402/evm).
//
// Wraps Node's fetch with wrapFetchWithPayment, which answers a 402 by signing an EIP-3009
// transferWithAuthorization ("exact" scheme) and retrying with X-PAYMENT (x402 v1) or
// PAYMENT-SIGNATURE (v2). Prints one JSON line:
//     {"status", "body", "headers", "payment_response"}
// and exits non-zero only when the client throws (the message goes to stderr).
//
// --version 1 registers only ExactEvmSchemeV1 (legacy network names such as "base-sepolia"),
// --version 2 only ExactEvmScheme on "eip155:*", and without it both, as
// registerExactEvmScheme does. The server picks the protocol: the client reads the
// PAYMENT-REQUIRED header (v2) first and falls back to a v1 JSON body. Signing is local; no
// RPC endpoint is contacted.
//
// Install: npm ci (beside this file; package-lock.json pins every package). Packages resolve
// from this directory's node_modules, or from the node_modules directory named by
// X402_NODE_MODULES.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const base = process.env.X402_NODE_MODULES
  ? path.join(path.dirname(path.resolve(process.env.X402_NODE_MODULES)), "x")
  : path.join(here, "x");
const require = createRequire(base);
const { wrapFetchWithPayment, x402Client, decodePaymentResponseHeader } = require("@x402/fetch");
const { ExactEvmScheme } = require("@x402/evm/exact/client");
const { ExactEvmSchemeV1 } = require("@x402/evm/exact/v1/client");
const { NETWORKS } = require("@x402/evm/v1");
const { privateKeyToAccount } = require("viem/accounts");

function usage(msg) {
  if (msg) process.stderr.write(`${msg}\n`);
  process.stderr.write(
    "usage: node pay.mjs --url URL --private-key HEX [--method GET|POST] [--json BODY]\n" +
      "                    [--version 1|2] [--header NAME:VALUE]... [--no-spend-controls]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const args = { method: "GET", headers: [], version: null, spendControls: true };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case "--url": args.url = value(); break;
      case "--private-key": args.key = value(); break;
      case "--method": args.method = value().toUpperCase(); break;
      case "--json": args.json = value(); break;
      case "--version": args.version = Number(value()); break;
      case "--header": args.headers.push(value()); break;
      case "--no-spend-controls": args.spendControls = false; break;
      case "-h": case "--help": usage();
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (!args.url || !args.key) usage("--url and --private-key are required");
  if (args.version !== null && args.version !== 1 && args.version !== 2) usage("--version is 1 or 2");
  return args;
}

function buildClient(key, version, spendControls) {
  const account = privateKeyToAccount(key.startsWith("0x") ? key : `0x${key}`);
  const client = new x402Client();
  if (version === null || version === 2) client.register("eip155:*", new ExactEvmScheme(account));
  if (version === null || version === 1) {
    const v1 = new ExactEvmSchemeV1(account);
    for (const network of NETWORKS) client.registerV1(network, v1);
  }
  if (!spendControls) client.setSpendControls(false);
  return client;
}

function decodeSettlement(headers) {
  const raw = headers.get("payment-response") ?? headers.get("x-payment-response");
  if (!raw) return null;
  try {
    return decodePaymentResponseHeader(raw);
  } catch {
    return raw;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const headers = new Headers();
  for (const h of args.headers) {
    const at = h.indexOf(":");
    if (at < 0) usage(`--header needs NAME:VALUE, got ${h}`);
    headers.set(h.slice(0, at).trim(), h.slice(at + 1).trim());
  }
  let body;
  if (args.json !== undefined) {
    JSON.parse(args.json); // fail early on a malformed body
    body = args.json;
    if (!headers.has("content-type")) headers.set("content-type", "application/json");
  }

  const client = buildClient(args.key, args.version, args.spendControls);
  const fetchWithPayment = wrapFetchWithPayment(fetch, client);
  let out;
  try {
    const resp = await fetchWithPayment(args.url, { method: args.method, headers, body });
    const text = await resp.text();
    let parsed = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON: keep the text */
    }
    const lower = {};
    resp.headers.forEach((v, k) => {
      lower[k.toLowerCase()] = v;
    });
    out = {
      status: resp.status,
      body: parsed,
      headers: lower,
      payment_response: decodeSettlement(resp.headers),
    };
  } catch (e) {
    const cause = e?.cause ? ` (${e.cause.message ?? e.cause})` : "";
    process.stderr.write(`${e?.message ?? e}${cause}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main();
